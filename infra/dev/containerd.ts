/**
 * A test cluster's containerd (its own instance, not Docker's, with the CRI plugin): its configuration, the
 * sandbox image it needs, and ending what it ran when the kubelet could not.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './commands.js';
import { CNI_BIN_DIR, CNI_RESULTS } from './pod-network.js';
import { listProcesses, programName, type ProcessInfo } from './processes.js';
import { waitFor, type Say } from './progress.js';

// The sandbox ("pause") image: registry.k8s.io can't be reached, so we make one: a static C program.

const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, r = {0};
  a.sa_handler = down; sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
`;

export async function ensurePauseImage(workDir: string): Promise<string> {
  const ref = `glider-gun/pause:${createHash('sha256').update(PAUSE_C).digest('hex').slice(0, 12)}`;
  const known = await run('docker', ['image', 'inspect', ref]).then(
    () => true,
    () => false,
  );
  if (known) return ref;
  const dir = path.join(workDir, 'pause');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'pause.c'), PAUSE_C);
  await run('gcc', ['-static', '-Os', '-s', '-o', path.join(dir, 'pause'), path.join(dir, 'pause.c')]).catch((err: unknown) => {
    throw new Error(`${String(err)}\n(gcc and libc6-dev are needed for the pause image: infra/dev/provision-host.sh installs them)`);
  });
  const tar = await run('tar', ['-C', dir, '-cf', path.join(dir, 'pause.tar'), 'pause']).then(() => path.join(dir, 'pause.tar'));
  await run('docker', ['import', '--change', 'ENTRYPOINT ["/pause"]', tar, ref]);
  return ref;
}

// ---------------------------------------------------------------------------------------------------------
// containerd

export function containerdConfig(opts: { root: string; state: string; socket: string; optDir: string; runcRoot: string; sandboxImage: string; cniConfDir: string; registryHosts: string }): string {
  const q = (s: string) => JSON.stringify(s);
  return `version = 2
root = ${q(opts.root)}
state = ${q(opts.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${q(opts.socket)}

[ttrpc]
  address = ${q(`${opts.socket}.ttrpc`)}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(opts.optDir)}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(opts.sandboxImage)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Never ask for an oom_score_adj below containerd's own: lowering it needs CAP_SYS_RESOURCE, which a
  # sandboxed root may lack (then runc fails with "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  # Pods' network namespaces under the cluster's own folder (not /run/netns), so a dead cluster's are found.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ${q(opts.runcRoot)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(CNI_BIN_DIR)}
    conf_dir = ${q(opts.cniConfDir)}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ${q(opts.registryHosts)}
`;
}

export type Kubectl = (args: string[], o?: { kubeconfig?: string; input?: string }) => Promise<string>;
export type Ctr = (args: string[]) => Promise<string>;

async function runningTasks(ctr: Ctr): Promise<string[]> {
  const listing = await ctr(['tasks', 'ls']);
  return listing
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && f[2] !== 'STOPPED')
    .map((f) => f[0]!);
}

/** Deletes every pod at once and waits (briefly) until the kubelet has stopped their containers and sandboxes. */
export async function removeAllPods(kubectl: Kubectl, ctr: Ctr, ipamDir: string, out: Say): Promise<void> {
  // Jobs and other owners would make their pods again: they go first, leaving their pods to us (orphan), since
  // the garbage collector would delete them with their own grace period (30s by default).
  await kubectl(['delete', 'jobs,replicasets,daemonsets,statefulsets,deployments', '--all', '--all-namespaces', '--cascade=orphan', '--wait=false', '--request-timeout', '10s']).catch(() => undefined);
  // A grace period of 1s, not a forced deletion: the kubelet would then give each pod its own.
  await kubectl(['delete', 'pods', '--all', '--all-namespaces', '--grace-period=1', '--wait=false', '--request-timeout', '10s']).catch(() => undefined);
  await waitFor('the pods\' containers to stop', async () => {
    const left = await runningTasks(ctr);
    if (left.length > 0) throw new Error(`${left.length} containers still running`);
    // A sandbox's network is torn down after its container stopped: host-local keeps a file per IP in use.
    const ips = (await readdir(ipamDir, { recursive: true }).catch(() => [])).filter((f) => /\d+\.\d+\.\d+\.\d+$/.test(f));
    if (ips.length > 0) throw new Error(`${ips.length} pod IPs still in use`);
  }, 30_000, out).catch((err: unknown) => out(`Kubernetes cluster: ${err instanceof Error ? err.message : String(err)}; killing them`));
}

/** What the kubelet did not stop: killed through containerd, network namespaces unmounted. */
export async function killRemainingContainers(ctr: Ctr, out: Say): Promise<void> {
  const containers = (await ctr(['containers', 'ls', '-q'])).split('\n').filter(Boolean);
  if (containers.length === 0) return;
  out(`Kubernetes cluster: removing ${containers.length} container(s) from containerd`);
  const netns = new Set<string>();
  for (const id of containers) {
    const info = await ctr(['containers', 'info', id]).catch(() => '');
    for (const m of info.matchAll(/"path":\s*"([^"]*\/netns\/[^"]+)"/g)) netns.add(m[1]!);
  }
  for (const id of await runningTasks(ctr).catch(() => [])) await ctr(['tasks', 'kill', '--signal', 'SIGKILL', '--all', id]).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 500));
  for (const id of containers) {
    await ctr(['tasks', 'delete', '--force', id]).catch(() => undefined);
    await ctr(['containers', 'delete', id]).catch(() => undefined);
  }
  for (const ns of netns) {
    await run('umount', [ns]).catch(() => undefined);
    await rm(ns, { force: true }).catch(() => undefined);
  }
  // libcni's cached results of sandboxes torn down without CNI DEL (ours are also removed by network name).
  for (const id of containers) await rm(path.join(CNI_RESULTS, `cni-loopback-${id}-lo`), { force: true });
}

/** containerd's shims outlive it by design (they leave its process tree): those serving the containerd at `socket`. */
export async function shimsOf(socket: string): Promise<ProcessInfo[]> {
  return (await listProcesses()).filter((p) => programName(p).startsWith('containerd-shim') && p.argv[p.argv.indexOf('-address') + 1] === socket);
}

export async function killShims(socket: string, out: Say): Promise<void> {
  for (const shim of await shimsOf(socket)) {
    out(`Kubernetes cluster: killing shim ${shim.pid}`);
    try {
      process.kill(shim.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}
