/**
 * `npm run pod-runner-image [-- --push <registry host:port>]`: builds the pod-runner image (infra/images/pod-runner)
 * with the local Docker engine and, with --push, pushes it where the cluster pulls from. Prints the reference
 * to give GLIDERGUN_KUBERNETES_RUNNER_IMAGE.
 */
import { createDockerClient } from '../../workers/node.js';
import { ensurePodRunnerImage } from './images.js';
import { pushImageTo } from './kubernetes.js';

const args = process.argv.slice(2);
const at = args.indexOf('--push');
const registry = at === -1 ? undefined : args[at + 1];
if (at !== -1 && !registry) throw new Error('--push needs a registry, e.g. --push registry.example:5000');
const local = await ensurePodRunnerImage(createDockerClient(process.env.DOCKER_HOST));
console.log(registry ? await pushImageTo(registry, local) : local);
