/**
 * The node API (docs/remote-nodes.md) as a node calls it: HTTPS to its gateway, which alone it trusts (the
 * pinned CA, no system roots), with its client certificate. The gateway names the node to the API from that
 * certificate; nothing a node sends names it.
 */
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { retireAgent } from '../activities/execution/agent-relay.js';

/** What a node dials with: the CA the gateway's certificate must chain to, and its own certificate once it has one. */
export interface NodeTlsCredentials {
  ca: string;
  cert?: string | undefined;
  key?: string | undefined;
}

/**
 * A call that did not succeed. `status` is the HTTP status (none when no answer came), `code` the API's or
 * the gateway's `{code}` (or this client's: `UNREACHABLE`, `TLS`, `BAD_ANSWER`), and `retryable` whether
 * the same call may succeed later unchanged.
 */
export class NodeApiError extends Error {
  constructor(
    readonly status: number | undefined,
    readonly code: string,
    message: string,
    readonly retryable: boolean,
    options?: ErrorOptions & { retryAfter?: string | string[] | undefined },
  ) {
    super(message, options);
    this.name = 'NodeApiError';
    const after = Array.isArray(options?.retryAfter) ? options.retryAfter[0] : options?.retryAfter;
    this.retryAfter = after;
  }

  /** What the answer's Retry-After asked (seconds), if anything. */
  readonly retryAfter: string | undefined;
}

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, initialMs: 250, maxMs: 5_000 };

/** Errors of the connection itself: the gateway is away, restarting or overloaded; the same call may pass later. */
const NETWORK_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EAI_AGAIN', 'ECONNABORTED', 'ENOTFOUND', 'UND_ERR_SOCKET']);

/** `host:port`, the host a name, an IPv4 address or a bracketed IPv6 one. */
export const GATEWAY_ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

const Certified = z.object({
  nodeId: z.string(),
  certificate: z.string().includes('-----BEGIN CERTIFICATE-----'),
  caCertificate: z.string().optional(),
  notAfter: z.string().optional(),
});
export type CertifiedAnswer = z.infer<typeof Certified>;
const ActiveRuns = z.object({ active: z.array(z.string()) });
const Empty = z.unknown();

/** Why a TLS handshake failed, in words an operator can act on. */
function tlsProblem(err: NodeJS.ErrnoException, gateway: string): string | undefined {
  const code = err.code ?? '';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the gateway's certificate does not name ${gateway}: ${err.message}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
    return `the gateway at ${gateway} presented a certificate the pinned CA does not vouch for (${code}): ${err.message}`;
  }
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_') || /alert/i.test(err.message)) {
    return `the TLS handshake with ${gateway} failed (${code || 'TLS'}): ${err.message}; if the gateway refused this node's certificate, it may have expired (enrol the node again)`;
  }
  return undefined;
}

/** How long to wait before attempt `n + 1` (n from 1): exponential with jitter, or what Retry-After asks (capped). */
function backoff(policy: RetryPolicy, n: number, retryAfter?: string): number {
  const asked = retryAfter ? Number(retryAfter) * 1000 : Number.NaN;
  if (Number.isFinite(asked) && asked >= 0) return Math.min(asked, 30_000);
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** (n - 1));
  return base / 2 + Math.random() * (base / 2);
}

export class NodeApi {
  private credentials: NodeTlsCredentials;
  private agent: https.Agent;
  private readonly base: URL;

  constructor(
    /** `host:port` of the gateway. */
    readonly gateway: string,
    credentials: NodeTlsCredentials,
    private readonly opts: { retry?: RetryPolicy; timeoutMs?: number } = {},
  ) {
    if (!GATEWAY_ADDRESS.test(gateway)) throw new Error(`'${gateway}' is not a gateway address (host:port)`);
    this.base = new URL(`https://${gateway}`);
    this.credentials = credentials;
    this.agent = this.makeAgent(credentials);
  }

  private makeAgent(c: NodeTlsCredentials): https.Agent {
    return new https.Agent({ keepAlive: true, ca: c.ca, ...(c.cert && c.key ? { cert: c.cert, key: c.key } : {}) });
  }

  /** Calls from now on go with these credentials (a renewed certificate); calls under way finish with the old ones. */
  setCredentials(credentials: NodeTlsCredentials): void {
    const old = this.agent;
    this.credentials = credentials;
    this.agent = this.makeAgent(credentials);
    retireAgent(old);
  }

  get currentCredentials(): NodeTlsCredentials {
    return this.credentials;
  }

  close(): void {
    this.agent.destroy();
  }

  /** Enrolment: the token in the body authenticates it (no client certificate yet). Never retried: the token is spent by the first that arrives. */
  enrol(body: { token: string; csr: string; sealingPublicKey: string }): Promise<CertifiedAnswer> {
    return this.call('POST', '/v1/node/enrol', body, Certified, false);
  }

  /** A new certificate for the calling node, for the key of `csr`. Not retried here: the renewal loop tries again later. */
  renewCertificate(csr: string): Promise<CertifiedAnswer> {
    return this.call('POST', '/v1/node/certificate', { csr }, Certified, false);
  }

  /** Not retried here: the next heartbeat is the retry, and a failure must be told while it lasts. */
  async heartbeat(body: { version: string; capacity: number; activeRuns: readonly string[] }): Promise<void> {
    await this.call('POST', '/v1/node/heartbeat', body, Empty, false);
  }

  /** The run's grant `{spec, secrets?}`, as JSON: its reader (activities/node.ts) checks every field. */
  runGrant(runId: string): Promise<unknown> {
    return this.call('GET', `/v1/node/runs/${encodeURIComponent(runId)}`, undefined, Empty, true);
  }

  async grantAgent(runId: string, credentialSha256: string): Promise<void> {
    await this.call('PUT', `/v1/node/runs/${encodeURIComponent(runId)}/agent`, { credentialSha256 }, Empty, true);
  }

  /** What the run's runner told the agent API, as JSON: its reader (node-api-run-agents.ts) checks it. */
  runReport(runId: string): Promise<unknown> {
    return this.call('GET', `/v1/node/runs/${encodeURIComponent(runId)}/report`, undefined, Empty, true);
  }

  /** Which of these runs of this node are still active (a read, so retried). */
  async activeRuns(runIds: readonly string[]): Promise<ReadonlySet<string>> {
    const answer = await this.call('POST', '/v1/node/active-runs', { runIds }, ActiveRuns, true);
    return new Set(answer.active);
  }

  private async call<T>(method: string, path: string, body: unknown, schema: z.ZodType<T>, idempotent: boolean): Promise<T> {
    const policy = this.opts.retry ?? DEFAULT_RETRY;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.once(method, path, body, schema);
      } catch (err) {
        if (!(err instanceof NodeApiError) || !err.retryable || !idempotent || attempt >= policy.attempts) throw err;
        await sleep(backoff(policy, attempt, err.retryAfter));
      }
    }
  }

  private once<T>(method: string, path: string, body: unknown, schema: z.ZodType<T>): Promise<T> {
    const what = `${method} ${path}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = https.request(
        new URL(path, this.base),
        {
          method,
          agent: this.agent,
          timeout: this.opts.timeoutMs ?? 30_000,
          headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) },
        },
        (res) => {
          readAll(res).then(
            (text) => {
              try {
                resolve(this.answer(what, res, text, schema));
              } catch (err) {
                reject(err instanceof Error ? err : new Error(String(err)));
              }
            },
            (err: unknown) => reject(new NodeApiError(undefined, 'UNREACHABLE', `${what}: the answer from ${this.gateway} was cut: ${String(err)}`, true)),
          );
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${(this.opts.timeoutMs ?? 30_000) / 1000} s`), { code: 'ETIMEDOUT' })));
      req.on('error', (err: NodeJS.ErrnoException) => {
        const tls = tlsProblem(err, this.gateway);
        if (tls) reject(new NodeApiError(undefined, 'TLS', `${what}: ${tls}`, false, { cause: err }));
        else if (NETWORK_ERRORS.has(err.code ?? '') || /socket hang up/.test(err.message)) {
          reject(new NodeApiError(undefined, 'UNREACHABLE', `${what}: the gateway at ${this.gateway} cannot be reached (${err.code ?? err.message})`, true, { cause: err }));
        } else reject(new NodeApiError(undefined, 'UNREACHABLE', `${what}: ${err.message}`, false, { cause: err }));
      });
      req.end(payload);
    });
  }

  private answer<T>(what: string, res: IncomingMessage, text: string, schema: z.ZodType<T>): T {
    const status = res.statusCode ?? 0;
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (status >= 200 && status < 300) {
      const parsed = schema.safeParse(json ?? {});
      if (!parsed.success) {
        throw new NodeApiError(status, 'BAD_ANSWER', `${what}: the answer is not what the node API promises: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; ')}`, false);
      }
      return parsed.data;
    }
    const problem = json as { code?: unknown; message?: unknown } | undefined;
    const code = typeof problem?.code === 'string' ? problem.code : `HTTP_${status}`;
    const message = typeof problem?.message === 'string' ? problem.message : text.slice(0, 200) || res.statusMessage || 'no message';
    const retryable = status >= 500 || status === 429;
    throw new NodeApiError(status, code, `${what}: ${status} ${code}: ${message}`, retryable, { retryAfter: res.headers['retry-after'] });
  }
}

async function readAll(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
