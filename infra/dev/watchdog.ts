/**
 * The dev stack's watchdog: a small process started before anything else, in a session of its own, that
 * holds the read end of a pipe from the stack. However the stack dies (`kill -9` and the OOM killer
 * included) the kernel closes the pipe; the watchdog then clears what the stack left (leftovers.ts) and
 * exits. The stack's direct children die with it anyway (processes.ts, diesWithParent); what they leave
 * (containerd's shims and the pods, mounts, the bridge) needs someone still alive.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { liveRecord, removeRecord, runDir, writeRecord } from './run-records.js';
import type { Say } from './progress.js';

const WATCHDOG_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'watchdog-main.ts');

export interface Watchdog {
  pid: number;
  /** Its log: what it cleared, when it had to. */
  logFile: string;
}

/** Starts the watchdog of the stack on `dataDir` (this process); it lives until this process ends. */
export async function startWatchdog(dataDir: string, out: Say): Promise<Watchdog> {
  mkdirSync(runDir(dataDir), { recursive: true });
  const logFile = path.join(runDir(dataDir), 'watchdog.log');
  const fd = openSync(logFile, 'a');
  let child;
  try {
    // tsx as a module path, so the watchdog starts whatever the working folder.
    child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), WATCHDOG_MAIN, dataDir, String(process.pid)], {
      detached: true,
      stdio: ['pipe', fd, fd],
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error('the watchdog did not start');
  child.on('exit', (code, signal) => out(`the watchdog (pid ${pid}) ended (${signal ?? code}): a crash of this process would now leave its children running; see ${logFile}`));
  // Neither the child nor the pipe keeps this process alive: the pipe closes when this process ends, which is the point.
  child.unref();
  (child.stdin as unknown as { unref(): void }).unref();
  await writeRecord(dataDir, 'watchdog', pid);
  return { pid, logFile };
}

/** A watchdog of an earlier start still clearing up: it is waited for (it is quick), then ended. */
export async function awaitEarlierWatchdog(dataDir: string, out: Say, timeoutMs = 60_000): Promise<void> {
  const record = await liveRecord(dataDir, 'watchdog');
  if (!record) return;
  out(`the watchdog of an earlier start (pid ${record.pid}) is still clearing up: waiting for it`);
  const deadline = Date.now() + timeoutMs;
  while (await liveRecord(dataDir, 'watchdog')) {
    if (Date.now() > deadline) {
      out(`the watchdog (pid ${record.pid}) did not end in ${timeoutMs / 1000}s: ending it`);
      try {
        process.kill(record.pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await removeRecord(dataDir, 'watchdog', record.pid);
}
