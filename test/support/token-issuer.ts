/**
 * A registry token service (distribution's "token" auth, as Docker Hub, GHCR or Harbor run one) for the
 * tests: it checks a user's password (Basic auth, or the OAuth2 password grant), grants the requested
 * repository actions that user may do, and answers a JWT signed with its own EC key. Debian's docker-registry
 * (distribution 2.8) verifies the tokens itself: the key's self-signed certificate is its `rootcertbundle`,
 * and the token's `kid` is that key's libtrust key ID, which the registry looks the key up by.
 */
import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { run } from '../../infra/dev/commands.js';

export type Action = 'pull' | 'push' | 'delete';

export interface TokenUser {
  password: string;
  /** What this user may do on any repository; a request for more is granted only these. */
  actions: readonly Action[];
}

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** One token given out: to whom (undefined: anonymous), what was asked and what was granted. */
export interface Issued {
  subject: string | undefined;
  scopes: string[];
  access: Access[];
}

export interface TokenIssuer {
  /** Where the registry sends clients for a token (its `realm`). */
  realm: string;
  /** The registry's name in tokens (`aud`), and the `service` the registry names in its challenges. */
  service: string;
  issuer: string;
  /** The certificate of the signing key (PEM): the registry's `rootcertbundle`. */
  certFile: string;
  /** Every token given out, in order. */
  issued: Issued[];
  /** A token as this service makes them, for `access`; with `key`, signed by another key (one the registry does not trust). */
  mint(subject: string | undefined, access: Access[], key?: KeyObject): string;
  stop(): Promise<void>;
}

const LIFETIME_SECONDS = 300;

const base64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

/** RFC 4648 base32 without padding. */
function base32(data: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/**
 * libtrust's key ID (github.com/docker/libtrust, util.go keyIDFromCryptoKey): the first 240 bits of the
 * SHA-256 of the public key's DER (PKIX), in base32, in groups of 4 joined by ':'.
 */
export function libtrustKeyId(key: KeyObject): string {
  const der = createPublicKey(key).export({ type: 'spki', format: 'der' });
  const encoded = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return encoded.match(/.{4}/g)!.join(':');
}

/** `repository:team/app:pull,push` → its parts; the name may hold ':' (a port), the actions come last. */
function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first === -1 || last === first) return undefined;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',').filter(Boolean) };
}

function basicCredentials(header: string | undefined): { username: string; password: string } | undefined {
  const m = /^Basic (.+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

/** Starts the service on 127.0.0.1; its key and certificate go in `dir`. */
export async function startTokenIssuer(opts: { dir: string; users: Record<string, TokenUser>; service?: string }): Promise<TokenIssuer> {
  const service = opts.service ?? 'gg-test-registry';
  const issuer = 'gg-test-token-issuer';
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyFile = path.join(opts.dir, 'token-key.pem');
  const certFile = path.join(opts.dir, 'token-cert.pem');
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await run('openssl', ['req', '-x509', '-new', '-key', keyFile, '-subj', `/CN=${issuer}`, '-days', '2', '-out', certFile]);

  const mint = (subject: string | undefined, access: Access[], key: KeyObject = privateKey): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', kid: libtrustKeyId(key) };
    const claims = { iss: issuer, sub: subject ?? '', aud: service, exp: now + LIFETIME_SECONDS, nbf: now - 1, iat: now, jti: randomBytes(12).toString('hex'), access };
    const signed = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    // JOSE wants ECDSA signatures as r||s, not DER.
    return `${signed}.${base64url(sign('sha256', Buffer.from(signed), { key, dsaEncoding: 'ieee-p1363' }))}`;
  };

  const issued: Issued[] = [];
  const refuse = (res: http.ServerResponse, status: number, message: string) => {
    res.writeHead(status, { 'content-type': 'application/json', ...(status === 401 ? { 'www-authenticate': 'Basic realm="gg-test-token-issuer"' } : {}) });
    res.end(JSON.stringify({ errors: [{ code: status === 401 ? 'UNAUTHORIZED' : 'DENIED', message }] }));
  };

  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://token-issuer');
      if (url.pathname !== '/token' || (req.method !== 'GET' && req.method !== 'POST')) return refuse(res, 404, 'not here');
      // GET with Basic auth (what the Docker engine and our client do), or the OAuth2 password grant (POST).
      let params = url.searchParams;
      let who = basicCredentials(req.headers.authorization);
      if (req.method === 'POST') {
        params = new URLSearchParams(await readBody(req));
        if (params.get('grant_type') !== 'password') return refuse(res, 400, 'only the password grant');
        who = { username: params.get('username') ?? '', password: params.get('password') ?? '' };
      }
      if (params.get('service') !== service) return refuse(res, 400, `this service issues tokens for ${service}`);
      const user = who && opts.users[who.username];
      if (who && (!user || user.password !== who.password)) return refuse(res, 401, 'wrong username or password');
      const scopes = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      // Anonymous requests get a token that grants nothing, as Docker Hub's does for a private repository.
      const access = scopes
        .map(parseScope)
        .filter((a): a is Access => a?.type === 'repository')
        .map((a) => ({ ...a, actions: a.actions.filter((x) => user?.actions.includes(x as Action)) }))
        .filter((a) => a.actions.length > 0);
      issued.push({ subject: who?.username, scopes, access });
      const token = mint(who?.username, access);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, access_token: token, expires_in: LIFETIME_SECONDS, issued_at: new Date().toISOString() }));
    })().catch((err: unknown) => res.destroy(err instanceof Error ? err : new Error(String(err))));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    realm: `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`,
    service,
    issuer,
    certFile,
    issued,
    mint,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
