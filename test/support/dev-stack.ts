/**
 * The dev stack (`npm start`, infra/dev/stack.ts) as a child process of a test, on a data dir and ports of
 * the test's own: started, waited for, killed, and what it started looked at from outside (/proc, ports,
 * mounts, links, cgroups).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { processesInCgroupRoot } from '../../infra/dev/cgroups.js';
import { run } from '../../infra/dev/commands.js';
import { clusterNames, processesOf } from '../../infra/dev/leftovers.js';
import { mountsUnder } from '../../infra/dev/mounts.js';
import { isPortInUse } from '../../infra/dev/ports.js';

export { keepablePort } from '../../infra/dev/ports.js';
import { listProcesses, processInfo, programName, stillRunning, withDescendants, type ProcessInfo } from '../../infra/dev/processes.js';
import { readRecord } from '../../infra/dev/run-records.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface StackProcess {
  child: ChildProcess;
  /** Everything it printed so far (stderr and stdout). */
  output(): string;
  exited: Promise<number | string>;
}

/** Starts `node --import tsx infra/dev/stack.ts` (what `npm start` runs) with `env` on top of a clean environment. */
export function spawnStack(env: Record<string, string>): StackProcess {
  const base = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('GG_TEST_') && !k.startsWith('GLIDERGUN_') && !['DATABASE_URL', 'TEMPORAL_ADDRESS'].includes(k)),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'infra', 'dev', 'stack.ts')], {
    cwd: ROOT,
    env: { ...base, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (text += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (text += c));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)));
  return { child, output: () => text, exited };
}

/** Waits for the stack's "Ctrl-C stops everything." and a healthy /healthz; fails with its output if it exits or takes too long. */
export async function waitUntilServing(stack: StackProcess, apiUrl: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exit: number | string | undefined;
  void stack.exited.then((e) => (exit = e));
  for (;;) {
    if (exit !== undefined) throw new Error(`the stack exited (${exit}) before serving:\n${stack.output().slice(-6000)}`);
    if (stack.output().includes('Ctrl-C stops everything.')) {
      const health = await fetch(`${apiUrl}/healthz`).catch(() => undefined);
      if (health?.status === 200) return;
    }
    if (Date.now() > deadline) throw new Error(`the stack did not serve within ${timeoutMs / 1000}s:\n${stack.output().slice(-6000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A line the stack printed at start (`[glider-gun] <label> <value>`): its value. */
export function printed(stack: StackProcess, label: string): string | undefined {
  return new RegExp(`\\[glider-gun\\] ${label}\\s+(\\S+)`).exec(stack.output())?.[1];
}

/** What the stack has running, as seen from outside: its process tree and the daemons it started for the data dir. */
export async function stackProcesses(stackPid: number, dataDir: string): Promise<ProcessInfo[]> {
  const all = await listProcesses();
  const root = all.find((p) => p.pid === stackPid);
  const tree = root ? withDescendants([root], all).filter((p) => p.pid !== stackPid) : [];
  const byPid = new Map([...tree, ...(await processesOf(dataDir))].map((p) => [p.pid, p]));
  return [...byPid.values()];
}

export async function stillAlive(procs: ProcessInfo[]): Promise<ProcessInfo[]> {
  return (await Promise.all(procs.map(async (p) => ((await stillRunning(p)) ? p : undefined)))).filter((p): p is ProcessInfo => !!p);
}

export const describeProcs = (procs: ProcessInfo[]): string => procs.map((p) => `${p.pid} ${programName(p)}`).join(', ');

/** The watchdog the stack recorded for the data dir, if it runs. */
export async function watchdogOf(dataDir: string): Promise<ProcessInfo | undefined> {
  const record = await readRecord(dataDir, 'watchdog');
  const info = record && (await processInfo(record.pid));
  return info?.startTime === record?.startTime ? info : undefined;
}

/** Everything of the stack that may outlive it, as a list of what is still there (empty: nothing). */
export async function leftovers(procs: ProcessInfo[], dataDir: string, ports: Record<string, number>): Promise<string[]> {
  const found: string[] = [];
  const alive = await stillAlive(procs);
  if (alive.length) found.push(`processes ${describeProcs(alive)}`);
  for (const [name, port] of Object.entries(ports)) if (await isPortInUse(port)) found.push(`${name}'s port ${port} in use`);
  const mounts = await mountsUnder([dataDir]);
  if (mounts.length) found.push(`${mounts.length} mounts under the data dir (${mounts[0]} …)`);
  const names = clusterNames(path.join(dataDir, 'kubernetes'));
  if (await run('ip', ['link', 'show', names.bridge]).then(() => true, () => false)) found.push(`bridge ${names.bridge}`);
  const pods = await processesInCgroupRoot(names.cgroupRoot);
  if (pods.length) found.push(`${pods.length} processes in cgroup ${names.cgroupRoot}`);
  const cgroup = await readFile(`/sys/fs/cgroup/pids/${names.cgroupRoot}/cgroup.procs`, 'utf8').then(() => true, () => false);
  if (cgroup) found.push(`cgroup ${names.cgroupRoot}`);
  return found;
}
