/**
 * What a dev stack or a test cluster leaves behind when its process dies without stopping it (a crash,
 * `kill -9`, the OOM killer): daemons, containerd's shims and the pods' containers, mounts under the data
 * folder, the pod bridge and its firewall rules, cgroups, CNI results, Postgres's pid file. One routine
 * clears it, used by the watchdog the moment the stack dies (watchdog.ts) and by the next start.
 *
 * Everything is found from the folder alone, so nothing needs to have been recorded before the death: our
 * daemons are known by their program and an argument inside the folder, a cluster's host-wide names are
 * derived from its folder (clusterNames), and its pods are whatever is in its cgroup root.
 */
import { createHash } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { killCgroupRoot, removeCgroupRoot } from './cgroups.js';
import { unmountUnder } from './mounts.js';
import { CNI_RESULTS, removePodNetwork } from './pod-network.js';
import { endProcesses, listProcesses, processInfo, programName, withDescendants, type ProcessInfo } from './processes.js';

/** A cluster's host-wide names, derived from its folder: unique per folder, and found again from it after a crash. */
export function clusterNames(dir: string): { id: string; nodeName: string; bridge: string; cgroupRoot: string; cniNetwork: string; socket: string } {
  const resolved = path.resolve(dir);
  const id = createHash('sha256').update(resolved).digest('hex').slice(0, 6);
  return {
    id,
    nodeName: `gg-node-${id}`,
    // Interface names have at most 15 characters.
    bridge: `gg${id}`,
    cgroupRoot: `glider-gun-${id}`,
    cniNetwork: `glider-gun-${id}`,
    socket: path.join(resolved, 'containerd.sock'),
  };
}

/** The programs the dev stack and its cluster run (setpriv: one caught before it exec'd its program). */
const OUR_PROGRAMS = new Set([
  'temporal', 'postgres', 'docker-registry', 'etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler',
  'kubelet', 'containerd', 'containerd-shim-runc-v2', 'runc', 'setpriv',
]);

const refersTo = (p: ProcessInfo, dir: string) => p.argv.slice(1).some((arg) => arg.split('=').some((part) => part === dir || part.startsWith(`${dir}/`)));

/** Our daemons still running for `dir`, with everything they started (Postgres's backends, a shim's containers). */
export async function processesOf(dir: string): Promise<ProcessInfo[]> {
  const all = await listProcesses();
  const ours = all.filter((p) => p.pid !== process.pid && OUR_PROGRAMS.has(programName(p)) && refersTo(p, dir));
  return withDescendants(ours, all);
}

/** Postgres stops at once on SIGQUIT, ending its backends itself; the rest has nothing worth a grace period. */
const stopSignal = (p: ProcessInfo): NodeJS.Signals => (programName(p) === 'postgres' && !p.argv[0]?.startsWith('postgres:') ? 'SIGQUIT' : 'SIGKILL');

async function endProcessesOf(dir: string, cleared: string[]): Promise<void> {
  const procs = await processesOf(dir);
  if (procs.length === 0) return;
  const names = [...new Set(procs.map((p) => programName(p).split(':')[0]))].join(', ');
  const left = await endProcesses(procs.map((info) => ({ info, signal: stopSignal(info) })));
  cleared.push(`${procs.length - left.length} process(es) (${names})`);
  if (left.length > 0) throw new Error(`processes ${left.map((p) => p.pid).join(', ')} do not end`);
}

/**
 * Clears what a dead test cluster in `dir` left (none of it may be running: the caller knows its owner is
 * gone). Answers what it cleared, for the log; nothing when nothing was left.
 */
export async function clearClusterLeftovers(dir: string): Promise<string[]> {
  const resolved = path.resolve(dir);
  const names = clusterNames(resolved);
  const cleared: string[] = [];
  await endProcessesOf(resolved, cleared);
  const pods = await killCgroupRoot(names.cgroupRoot);
  if (pods > 0) cleared.push(`${pods} pod process(es)`);
  const mounts = await unmountUnder([resolved]);
  if (mounts > 0) cleared.push(`${mounts} mount(s)`);
  if (await removePodNetwork(names.bridge)) cleared.push(`bridge ${names.bridge}`);
  await removeCgroupRoot(names.cgroupRoot);
  for (const f of await readdir(CNI_RESULTS).catch(() => [])) if (f.startsWith(`${names.cniNetwork}-`)) await rm(path.join(CNI_RESULTS, f), { force: true });
  return cleared;
}

/** Postgres refuses to start while its pid file names a live process: once ours is gone, the file goes too. */
async function removeStalePostgresPid(dataDir: string, cleared: string[]): Promise<void> {
  const file = path.join(dataDir, 'postgres', 'postmaster.pid');
  const pid = Number((await readFile(file, 'utf8').catch(() => '')).split('\n')[0]);
  if (!pid) return;
  const holder = await processInfo(pid);
  if (holder && programName(holder) === 'postgres') return;
  await rm(file, { force: true });
  cleared.push('a stale postmaster.pid');
}

/**
 * Clears what a dead dev stack on `dataDir` left: its daemons (Temporal, Postgres, the registry, the dev
 * cluster's), the dev cluster's pods, mounts, bridge and cgroups. The caller makes sure no stack runs on it.
 */
export async function clearStackLeftovers(dataDir: string): Promise<string[]> {
  const resolved = path.resolve(dataDir);
  const cleared: string[] = [];
  await endProcessesOf(resolved, cleared);
  cleared.push(...(await clearClusterLeftovers(path.join(resolved, 'kubernetes'))));
  const mounts = await unmountUnder([resolved]);
  if (mounts > 0) cleared.push(`${mounts} mount(s)`);
  await removeStalePostgresPid(resolved, cleared);
  return cleared;
}
