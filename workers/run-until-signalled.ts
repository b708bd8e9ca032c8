import type { ComposedProcess } from './compose.js';

/** A line for the operator, on stderr like the SDK's own. */
export function say(line: string): void {
  process.stderr.write(`[glider-gun] ${line}\n`);
}

/**
 * Starts a process on its own (the workers/*-main.ts entry points) and stops it in order on SIGINT or
 * SIGTERM, then exits. The handlers are in place before the start, so a signal during it stops what was
 * started. A start that fails stops what it had started and rethrows.
 */
export async function runUntilSignalled(composed: ComposedProcess): Promise<void> {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      // A second signal: someone does not want to wait for the workers' grace time.
      say(`${signal} again: exiting without waiting`);
      process.exit(1);
    }
    signalled = true;
    say(`${signal}: stopping`);
    composed.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        say(`stopping failed: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await composed.start();
  } catch (err) {
    await composed.stop().catch(() => undefined);
    throw err;
  }
}
