/**
 * `<data dir>/run/<name>.json`: which process (pid and start time) plays a part for a data dir: the dev
 * stack itself (one at a time per data dir) and its watchdog.
 */
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { processInfo, stillRunning } from './processes.js';

export interface ProcessRecord {
  pid: number;
  startTime: string;
}

export const runDir = (dataDir: string): string => path.join(dataDir, 'run');
const recordFile = (dataDir: string, name: string) => path.join(runDir(dataDir), `${name}.json`);

export async function writeRecord(dataDir: string, name: string, pid: number): Promise<ProcessRecord> {
  const info = await processInfo(pid);
  if (!info) throw new Error(`process ${pid} (${name}) is not running`);
  const record = { pid, startTime: info.startTime };
  await mkdir(runDir(dataDir), { recursive: true });
  await writeFile(recordFile(dataDir, name), JSON.stringify(record));
  return record;
}

export async function readRecord(dataDir: string, name: string): Promise<ProcessRecord | undefined> {
  const text = await readFile(recordFile(dataDir, name), 'utf8').catch(() => undefined);
  try {
    return text ? (JSON.parse(text) as ProcessRecord) : undefined;
  } catch {
    return undefined;
  }
}

/** The recorded process if it still runs (not another that got its pid since). */
export async function liveRecord(dataDir: string, name: string): Promise<ProcessRecord | undefined> {
  const record = await readRecord(dataDir, name);
  return record && (await stillRunning(record)) ? record : undefined;
}

export async function removeRecord(dataDir: string, name: string, ifPid?: number): Promise<void> {
  if (ifPid !== undefined && (await readRecord(dataDir, name))?.pid !== ifPid) return;
  await rm(recordFile(dataDir, name), { force: true });
}
