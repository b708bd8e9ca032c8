import http from 'node:http';
import https from 'node:https';
import { randomBytes } from 'node:crypto';
import { chmod, rename, rm, stat } from 'node:fs/promises';

/** Request headers passed on to the agent API; anything else (Authorization above all) is the relay's own. */
const PASSED_HEADERS = ['content-type', 'content-length', 'transfer-encoding', 'accept', 'accept-encoding'];

export interface AgentRelay {
  close(): Promise<void>;
}

/** A client certificate and the CA that the server's must chain to (PEM): a node's mTLS to its gateway. */
export interface ClientTls {
  /** The only CA trusted for the server's certificate (no system roots). */
  ca: string;
  cert: string;
  key: string;
}

/**
 * Lets an agent's requests under way finish, then closes its sockets: the agent of credentials that were
 * replaced (a renewed certificate) must not carry a new request, nor cut one it carries.
 */
export function retireAgent(agent: http.Agent): void {
  agent.keepSocketAlive = () => false;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
}

/**
 * A keep-alive agent for the current client credentials: `tls()` is asked for every request, and when it
 * answers other credentials than before (a renewal), a new agent is made and the previous one retired.
 */
export function tlsAgents(tls: () => ClientTls): { agent(): https.Agent; destroy(): void } {
  let current: { tls: ClientTls; agent: https.Agent } | undefined;
  return {
    agent() {
      const now = tls();
      if (current?.tls === now) return current.agent;
      if (current) retireAgent(current.agent);
      current = { tls: now, agent: new https.Agent({ keepAlive: true, ca: now.ca, cert: now.cert, key: now.key }) };
      return current.agent;
    },
    destroy() {
      current?.agent.destroy();
      current = undefined;
    },
  };
}

/**
 * The runner's way to the agent API on a Docker node: a unix socket in the run's runner folder, mounted into
 * the container. Each call is passed on with the run's credential, which never enters the container. Only
 * the run's own agent routes are reachable, so whatever reaches the socket (the template too) can do what
 * the runner does and nothing more: read the run's state and template files, add to the run's log, store
 * the run's /state and report once (docs/template-contract.md says what that allows).
 */
export async function startAgentRelay(opts: {
  socketPath: string;
  agentUrl: string;
  runId: string;
  credential: string;
  /**
   * For an https agentUrl (a node's gateway): the CA its certificate must chain to and this node's client
   * certificate, asked for at each call so a renewed certificate is used from the next one on.
   */
  tls?: (() => ClientTls) | undefined;
}): Promise<AgentRelay> {
  const base = new URL(opts.agentUrl);
  const transport = base.protocol === 'https:' ? https : http;
  const plain = new transport.Agent({ keepAlive: true });
  const mtls = opts.tls && base.protocol === 'https:' ? tlsAgents(opts.tls) : undefined;
  const prefix = `/v1/agent/runs/${opts.runId}/`;
  const server = http.createServer((req, res) => {
    const target = new URL(req.url ?? '/', base);
    if (!target.pathname.startsWith(prefix) || target.pathname.includes('/../') || target.pathname.includes('/./')) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'NOT_FOUND', message: `only ${prefix}… is reachable here` }));
      req.resume();
      return;
    }
    const headers: Record<string, string | string[]> = { authorization: `Bearer ${opts.credential}` };
    for (const name of PASSED_HEADERS) {
      const value = req.headers[name];
      if (value !== undefined) headers[name] = value;
    }
    const upstream = transport.request(target, { method: req.method, headers, agent: mtls ? mtls.agent() : plain }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, answer.headers);
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => {
      // Unreachable: the runner retries. A cut in the middle of an answer reaches it as a cut stream.
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'AGENT_UNREACHABLE', message: `the agent API did not answer: ${err.message}` }));
      else res.destroy(err);
    });
    req.on('error', () => upstream.destroy());
    // The runner went away mid-call: the agent API sees the body cut, as it would from a pod.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  });
  // Made under a name of its own, then renamed over the socket an earlier attempt left (this run adopted):
  // the runner's next connection reaches this one, and when the earlier attempt's server closes, what it
  // removes (the name it was made under) is not this socket.
  const made = `${opts.socketPath}.${randomBytes(4).toString('hex')}`;
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(made, resolve));
  // The template may run as any user; the mount it comes through is the only gate.
  await chmod(made, 0o666);
  await rename(made, opts.socketPath);
  const own = await stat(opts.socketPath);
  return {
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      plain.destroy();
      mtls?.destroy();
      // An attempt that adopted the run meanwhile has its own socket at this path: that one stays.
      const now = await stat(opts.socketPath).catch(() => undefined);
      if (now && now.ino === own.ino && now.dev === own.dev) await rm(opts.socketPath, { force: true });
    },
  };
}
