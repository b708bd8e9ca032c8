/**
 * A remote node's local settings, from its environment (validated at start, every problem listed). None of
 * them names the node or the control plane: the identity folder does (workers/node-identity.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { parseDockerConfig, type RegistryAuth } from '../core/registry-credentials.js';
import type { NodeSettings } from './node.js';

export const DEFAULT_NODE_DIR = '/var/lib/glider-gun-node';

const Env = z.object({
  /** The identity folder (enrolment writes it; the worker reads it). */
  GLIDERGUN_NODE_DIR: z.string().min(1).default(DEFAULT_NODE_DIR),
  /** Runs' folders and the runner binary; <identity folder>/work unless set. */
  GLIDERGUN_NODE_WORK_DIR: z.string().min(1).optional(),
  /** On a memory file system (tmpfs): runs' secrets files. */
  GLIDERGUN_SECRETS_DIR: z.string().min(1).default('/dev/shm/glider-gun-node'),
  GLIDERGUN_NODE_RUNNER_IMAGE: z.string().min(1).optional(),
  GLIDERGUN_NODE_CAPACITY: z.coerce.number().int().min(1).max(1000).default(20),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  GLIDERGUN_REGISTRY_AUTH_FILE: z.string().min(1).optional(),
  /** How long running activities get to end when the worker stops (their containers go on and are adopted later). */
  GLIDERGUN_NODE_SHUTDOWN_GRACE_SECONDS: z.coerce.number().int().min(0).max(3600).default(10),
  /** Between heartbeats to the node API. */
  GLIDERGUN_NODE_HEARTBEAT_SECONDS: z.coerce.number().int().min(1).max(300).default(30),
  DOCKER_HOST: z.string().min(1).optional(),
});

export class NodeSettingsError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid node settings:\n  ${problems.join('\n  ')}`);
    this.name = 'NodeSettingsError';
  }
}

/** The node's settings; `dir` (from --dir) wins over GLIDERGUN_NODE_DIR. */
export function loadNodeSettings(env: NodeJS.ProcessEnv, dir?: string): { dir: string; dockerHost: string | undefined; settings: NodeSettings } {
  const parsed = Env.safeParse(Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== '')));
  if (!parsed.success) throw new NodeSettingsError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  const e = parsed.data;
  const problems: string[] = [];
  if (!e.GLIDERGUN_NODE_RUNNER_IMAGE) problems.push('GLIDERGUN_NODE_RUNNER_IMAGE: required (the pod-runner image every run is wrapped by; npm run pod-runner-image builds it)');
  let registryCredentials: RegistryAuth[] = [];
  if (e.GLIDERGUN_REGISTRY_AUTH_FILE) {
    try {
      registryCredentials = parseDockerConfig(readFileSync(e.GLIDERGUN_REGISTRY_AUTH_FILE, 'utf8'));
    } catch (err) {
      problems.push(`GLIDERGUN_REGISTRY_AUTH_FILE: ${e.GLIDERGUN_REGISTRY_AUTH_FILE}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (problems.length > 0) throw new NodeSettingsError(problems);
  const identityDir = path.resolve(dir ?? e.GLIDERGUN_NODE_DIR);
  return {
    dir: identityDir,
    dockerHost: e.DOCKER_HOST,
    settings: {
      workDir: path.resolve(e.GLIDERGUN_NODE_WORK_DIR ?? path.join(identityDir, 'work')),
      secretsDir: path.resolve(e.GLIDERGUN_SECRETS_DIR),
      runnerImage: e.GLIDERGUN_NODE_RUNNER_IMAGE!,
      capacity: e.GLIDERGUN_NODE_CAPACITY,
      namespace: e.TEMPORAL_NAMESPACE,
      registryCredentials,
      shutdownGraceSeconds: e.GLIDERGUN_NODE_SHUTDOWN_GRACE_SECONDS,
      heartbeatSeconds: e.GLIDERGUN_NODE_HEARTBEAT_SECONDS,
    },
  };
}
