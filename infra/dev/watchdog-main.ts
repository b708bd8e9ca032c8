/**
 * The watchdog process (watchdog.ts starts it): `watchdog-main.ts <data dir> <stack pid>`, its stdin the
 * read end of a pipe whose write end only the stack holds.
 */
import { clearStackLeftovers } from './leftovers.js';
import { removeRecord } from './run-records.js';

const [dataDir, stackPid] = process.argv.slice(2);
if (!dataDir || !stackPid) throw new Error('usage: watchdog-main.ts <data dir> <stack pid>');

const log = (line: string) => process.stdout.write(`${new Date().toISOString()} watchdog ${process.pid}: ${line}\n`);

// Signals meant for the terminal's foreground (a Ctrl-C, a closed terminal) are the stack's business; the
// watchdog ends when the stack has.
for (const signal of ['SIGINT', 'SIGHUP', 'SIGTERM'] as const) process.on(signal, () => log(`${signal} ignored: waiting for the stack to end`));

let done = false;
const onStackGone = async () => {
  if (done) return;
  done = true;
  const started = Date.now();
  try {
    const cleared = await clearStackLeftovers(dataDir);
    log(cleared.length ? `the stack (pid ${stackPid}) died; cleared ${cleared.join(', ')} in ${Date.now() - started} ms` : `the stack (pid ${stackPid}) ended; nothing was left`);
  } catch (err) {
    log(`clearing after the stack (pid ${stackPid}) failed: ${err instanceof Error ? err.stack : String(err)}; the next start tries again`);
  }
  await removeRecord(dataDir, 'stack', Number(stackPid));
  await removeRecord(dataDir, 'watchdog', process.pid);
  process.exit(0);
};

log(`watching the stack (pid ${stackPid}) on ${dataDir}`);
process.stdin.on('end', () => void onStackGone());
process.stdin.on('close', () => void onStackGone());
process.stdin.on('error', () => void onStackGone());
process.stdin.resume();
