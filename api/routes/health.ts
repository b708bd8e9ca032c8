import { Router } from 'express';
import type { ApiDeps } from '../deps.js';

const PROBE_TIMEOUT_MS = 3_000;

async function probe(check: () => Promise<void>): Promise<{ ok: boolean; error?: string }> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
      }),
    ]);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

export function healthRouter(deps: Pick<ApiDeps, 'probes'>): Router {
  const router = Router();
  router.get('/healthz', async (_req, res) => {
    const names = Object.keys(deps.probes);
    const results = await Promise.all(names.map((n) => probe(deps.probes[n]!)));
    const checks = Object.fromEntries(names.map((n, i) => [n, results[i]]));
    const ok = results.every((r) => r.ok);
    res.status(ok ? 200 : 503).json({ status: ok ? 'ok' : 'degraded', checks });
  });
  return router;
}
