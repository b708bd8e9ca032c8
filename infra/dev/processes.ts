/**
 * Processes as /proc shows them, for finding and ending what a dead dev stack left running. A pid alone may
 * have been reused by the time we look: a process is known by its pid and its start time together.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';

export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** Clock ticks since boot (/proc/<pid>/stat field 22): with the pid, names one process for good. */
  startTime: string;
  argv: string[];
}

/** One process, or undefined once it has gone (a zombie counts as gone: it only waits to be reaped). */
export async function processInfo(pid: number): Promise<ProcessInfo | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat) return undefined;
  // The command name is in parentheses and may hold spaces or parentheses itself: the fields follow the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return { pid, ppid: Number(fields[1]), startTime: fields[19] ?? '', argv: cmdline.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1) };
}

export async function listProcesses(): Promise<ProcessInfo[]> {
  const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p)).map(Number);
  return (await Promise.all(pids.map(processInfo))).filter((p): p is ProcessInfo => p !== undefined);
}

/** The process recorded as pid + start time, if it still runs. */
export async function stillRunning(record: { pid: number; startTime: string }): Promise<boolean> {
  return (await processInfo(record.pid))?.startTime === record.startTime;
}

/** `procs` and everything they started, transitively (a shim's containers, Postgres's backends). */
export function withDescendants(procs: ProcessInfo[], all: ProcessInfo[]): ProcessInfo[] {
  const found = new Map(procs.map((p) => [p.pid, p]));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of all) {
      if (!found.has(p.pid) && found.has(p.ppid)) {
        found.set(p.pid, p);
        grew = true;
      }
    }
  }
  return [...found.values()];
}

/**
 * Sends each process its signal, waits until all have gone, and sends SIGKILL to those still there after
 * `graceMs`. Only the very processes listed are signalled (pid and start time checked just before).
 */
export async function endProcesses(procs: { info: ProcessInfo; signal: NodeJS.Signals }[], graceMs = 5_000, timeoutMs = 15_000): Promise<ProcessInfo[]> {
  const signal = async (p: ProcessInfo, sig: NodeJS.Signals) => {
    if (!(await stillRunning(p))) return;
    try {
      process.kill(p.pid, sig);
    } catch {
      // gone meanwhile
    }
  };
  await Promise.all(procs.map(({ info, signal: sig }) => signal(info, sig)));
  const started = Date.now();
  let killed = false;
  for (;;) {
    const left = (await Promise.all(procs.map(async ({ info }) => ((await stillRunning(info)) ? info : undefined)))).filter((p): p is ProcessInfo => !!p);
    if (left.length === 0) return [];
    if (!killed && Date.now() - started > graceMs) {
      killed = true;
      await Promise.all(left.map((p) => signal(p, 'SIGKILL')));
    }
    if (Date.now() - started > timeoutMs) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((f) => existsSync(f));

/**
 * The command line that runs `command` so the kernel kills it (SIGKILL) the moment the process that spawned
 * it dies, however it dies (`kill -9` included): util-linux's setpriv sets PR_SET_PDEATHSIG and execs it.
 * Without setpriv the command runs as is, and only the watchdog and the next start clear it up.
 */
export function diesWithParent(command: string, args: string[]): { command: string; args: string[] } {
  return SETPRIV ? { command: SETPRIV, args: ['--pdeathsig', 'KILL', '--', command, ...args] } : { command, args };
}

export const programName = (p: ProcessInfo): string => path.basename(p.argv[0] ?? '');
