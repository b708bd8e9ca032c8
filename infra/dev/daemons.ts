/**
 * The dev infrastructure's daemons (the registry, the cluster's components): each with its output in a
 * log file, killed by the kernel if the process that started it dies (processes.ts, diesWithParent), and
 * waited for with a readiness check that gives up as soon as waiting cannot help.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { tail, systemEnv } from './commands.js';
import { diesWithParent } from './processes.js';
import type { Say } from './progress.js';

export interface Daemon {
  name: string;
  logFile: string;
  child: ChildProcess;
  /** Why it ended, once it has. */
  exit: string | undefined;
  stop(graceMs?: number): Promise<void>;
}

/** Daemons still running; killed if this process exits without stopping them. */
const running = new Set<ChildProcess>();
let exitHook = false;

/**
 * Starts a daemon in a process group of its own, so a Ctrl-C in the terminal reaches only our process,
 * which then stops the daemons in order (a cluster's kubelet first, pods with it).
 */
export function startDaemon(name: string, binary: string, args: string[], logDir: string, env?: NodeJS.ProcessEnv): Daemon {
  const logFile = path.join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    const cmd = diesWithParent(binary, args);
    child = spawn(cmd.command, cmd.args, { stdio: ['ignore', fd, fd], detached: true, env: env ?? systemEnv() });
  } finally {
    closeSync(fd);
  }
  running.add(child);
  child.on('exit', () => running.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
  const daemon: Daemon = {
    name,
    logFile,
    child,
    exit: undefined,
    async stop(graceMs = 10_000) {
      if (daemon.exit !== undefined) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await done;
      clearTimeout(timer);
    },
  };
  child.on('error', (err) => (daemon.exit = `could not start: ${err.message}`));
  child.on('exit', (code, signal) => (daemon.exit = signal ? `killed by ${signal}` : `exited with ${code}`));
  return daemon;
}

/** A readiness check's verdict that waiting longer will not change. */
export class Hopeless extends Error {}

/**
 * Waits for a daemon's readiness check (as progress.ts's waitFor, but giving up at once when the daemon
 * dies or the check says Hopeless); on failure prints the end of the daemon's log.
 */
export async function waitForDaemon(daemon: Daemon, what: string, check: () => Promise<unknown>, timeoutMs: number, out: Say): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let nextReport = Date.now() + 5_000;
  for (;;) {
    let failure: Error | undefined;
    try {
      if (daemon.exit !== undefined) throw new Hopeless(`${daemon.name} ${daemon.exit}`);
      await check();
      return;
    } catch (err) {
      const last = err instanceof Error ? err : new Error(String(err));
      if (last instanceof Hopeless) failure = last;
      else if (Date.now() > deadline) failure = new Error(`${what} not ready after ${timeoutMs / 1000}s: ${last.message}`);
    }
    if (failure) {
      out(`${daemon.name} did not come up (${failure.message}); the end of ${daemon.logFile}:\n${await tail(daemon.logFile)}`);
      throw failure;
    }
    if (Date.now() > nextReport) {
      out(`waiting for ${what} ...`);
      nextReport = Date.now() + 5_000;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
