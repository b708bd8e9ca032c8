/** Progress for long set-up steps: a line when a step starts, a heartbeat while it runs, its time when it ends. */
export type Say = (line: string) => void;

export const say: Say = (line) => process.stderr.write(`[glider-gun] ${line}\n`);

export async function step<T>(label: string, fn: () => Promise<T>, out: Say = say, everyMs = 10_000): Promise<T> {
  const started = Date.now();
  out(`${label} ...`);
  const timer = setInterval(() => out(`${label}: still working (${Math.round((Date.now() - started) / 1000)}s)`), everyMs);
  try {
    const result = await fn();
    out(`${label}: done in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return result;
  } catch (err) {
    out(`${label}: FAILED after ${((Date.now() - started) / 1000).toFixed(1)}s`);
    throw err;
  } finally {
    clearInterval(timer);
  }
}

/** Polls until check resolves, or fails with the last error after timeoutMs. */
export async function waitFor(what: string, check: () => Promise<unknown>, timeoutMs: number, out: Say = say): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  let nextReport = Date.now() + 5_000;
  for (;;) {
    try {
      await check();
      return;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what} not ready after ${timeoutMs / 1000}s: ${lastError instanceof Error ? lastError.message : String(lastError)}`);
    }
    if (Date.now() > nextReport) {
      out(`waiting for ${what} ...`);
      nextReport = Date.now() + 5_000;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
