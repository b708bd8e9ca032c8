import { defineRoute, type AnyRoute } from '../http/route.js';
import type { ApiDeps } from '../deps.js';
import { HealthSchema } from '../schemas.js';

const PROBE_TIMEOUT_MS = 3_000;

/** The error and what caused it: fetch says only "fetch failed", its cause says "connect ECONNREFUSED …". */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause instanceof Error && err.cause.message ? `${err.message}: ${err.cause.message}` : err.message;
}

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
    return { ok: false, error: describe(err) };
  } finally {
    clearTimeout(timer);
  }
}

export function healthRoutes(deps: Pick<ApiDeps, 'probes'>): AnyRoute[] {
  return [
    defineRoute({
      method: 'get',
      path: '/healthz',
      operationId: 'getHealth',
      summary: 'Report whether Postgres, Temporal, the Docker engine, the Kubernetes API server and the build registry answer (those configured)',
      tag: 'system',
      roles: 'public',
      responses: { 200: { description: 'all dependencies answer', schema: HealthSchema }, 503: { description: 'a dependency is down', schema: HealthSchema } },
      errors: [],
      async handler() {
        const names = Object.keys(deps.probes);
        const results = await Promise.all(names.map((n) => probe(deps.probes[n]!)));
        const ok = results.every((r) => r.ok);
        return {
          status: ok ? 200 : 503,
          body: { status: ok ? 'ok' : 'degraded', checks: Object.fromEntries(names.map((n, i) => [n, results[i]])) },
        };
      },
    }),
  ];
}
