/**
 * A node's identity on its own disk (docs/remote-nodes.md): one folder, private to the node's user.
 *
 *   node.json    the gateway's address, the node id (as its certificate names it), the files below
 *   ca.pem       the CA pinned at enrolment: the only one trusted for the gateway's certificate
 *   tls.key      the client key (ECDSA P-256, made here, never sent), 0600
 *   tls.crt      the client certificate the node CA signed for it
 *   sealing.key  the X25519 key run secrets are sealed to (made here; its public half was registered), 0600
 *
 * Every file is written whole under a temporary name and renamed into place, so a crash leaves the old file
 * or the new one, never half of either. A renewal replaces tls.key and tls.crt as a pair: both are staged as
 * `*.next` first, and a folder found with a key and certificate that do not match is completed from them.
 */
import { X509Certificate, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { generateNodeKeyPair } from '../core/crypto.js';
import { certificateNotAfter, createKeyAndCsr, nodeIdOf } from '../core/pki.js';
import { GATEWAY_ADDRESS, NodeApi, type CertifiedAnswer } from './node-api.js';

export const IDENTITY_FILES = { config: 'node.json', ca: 'ca.pem', key: 'tls.key', certificate: 'tls.crt', sealingKey: 'sealing.key' } as const;

/** A node's identity, read from its folder. */
export interface NodeIdentity {
  dir: string;
  /** `host:port` of the gateway: the only address the node dials. */
  gateway: string;
  /** Read from the certificate's one `spiffe://glider-gun/node/<id>` URI SAN, never from anything else. */
  nodeId: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  /** The X25519 private key (PKCS#8 PEM) that opens what was sealed to this node. */
  sealingKeyPem: string;
}

/** What node.json holds. The node id there is for people reading the folder; the certificate is what counts. */
interface NodeJson {
  version: 1;
  gateway: string;
  nodeId: string;
  files: typeof IDENTITY_FILES;
}

export class NodeIdentityError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'NodeIdentityError';
  }
}

/** Writes `content` to `file` atomically (a temporary name in the same folder, fsync, rename) with `mode`. */
export async function writeFileAtomic(file: string, content: string, mode: number): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', mode);
  try {
    await handle.writeFile(content);
    // The mode given to open() is masked by the umask; a key must end 0600 whatever the umask.
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(temp, file);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The certificate is for this key: their public keys are one. */
function certificateMatchesKey(certPem: string, keyPem: string): boolean {
  try {
    return new X509Certificate(certPem).checkPrivateKey(createPrivateKey(keyPem));
  } catch {
    return false;
  }
}

/** Checks a certificate as the node receives it: it names a node, is for `keyPem`, chains to one of `cas`, and is current. */
function checkCertificate(certPem: string, keyPem: string, cas: readonly string[], expectedNodeId?: string): string {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (err) {
    throw new NodeIdentityError(`the certificate cannot be read: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  const nodeId = nodeIdOf(certPem);
  if (!nodeId) throw new NodeIdentityError('the certificate names no node (it needs exactly one URI SAN spiffe://glider-gun/node/<id>)');
  if (expectedNodeId !== undefined && nodeId !== expectedNodeId) {
    throw new NodeIdentityError(`the certificate names node '${nodeId}', but this is node '${expectedNodeId}'`);
  }
  if (!certificateMatchesKey(certPem, keyPem)) throw new NodeIdentityError('the certificate is not for this node\'s key');
  if (!cas.some((ca) => cert.verify(new X509Certificate(ca).publicKey))) throw new NodeIdentityError('the certificate is not signed by the node CA');
  if (Date.parse(cert.validTo) <= Date.now()) throw new NodeIdentityError(`the certificate expired at ${new Date(cert.validTo).toISOString()}`);
  return nodeId;
}

async function readText(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new NodeIdentityError(code === 'ENOENT' ? `${file} is missing (${what})` : `${file} cannot be read: ${(err as Error).message}`, { cause: err });
  }
}

/** A secret key file must be the node user's alone: refused (like ssh does) when others may read it. */
async function readSecret(file: string, what: string): Promise<string> {
  const text = await readText(file, what);
  const { mode } = await stat(file);
  if ((mode & 0o077) !== 0) {
    throw new NodeIdentityError(`${file} (${what}) may be read by others (mode ${(mode & 0o777).toString(8)}): chmod 600 ${file}`);
  }
  return text;
}

/**
 * A renewal that stopped between its two renames: tls.key is new and tls.crt old, and tls.crt.next is the
 * certificate for the new key; it is put in place. Staged files of a renewal that stopped before them are
 * dropped (the old pair is still whole and valid).
 */
async function completeRenewal(dir: string): Promise<void> {
  const keyFile = path.join(dir, IDENTITY_FILES.key);
  const certFile = path.join(dir, IDENTITY_FILES.certificate);
  const nextKey = `${keyFile}.next`;
  const nextCert = `${certFile}.next`;
  const staged = await readFile(nextCert, 'utf8').catch(() => undefined);
  if (staged !== undefined) {
    const key = await readFile(keyFile, 'utf8').catch(() => undefined);
    const cert = await readFile(certFile, 'utf8').catch(() => undefined);
    if (key !== undefined && certificateMatchesKey(staged, key) && !(cert !== undefined && certificateMatchesKey(cert, key))) {
      await rename(nextCert, certFile);
      await syncDir(dir);
    }
  }
  await rm(nextKey, { force: true });
  await rm(nextCert, { force: true });
}

/** Reads and checks a node's identity folder: every file there, the certificate for the key and naming the node. */
export async function readNodeIdentity(dir: string): Promise<NodeIdentity> {
  const configFile = path.join(dir, IDENTITY_FILES.config);
  let config: Partial<NodeJson>;
  try {
    config = JSON.parse(await readText(configFile, 'the node\'s settings: enrol the node first (npm run node-worker -- enrol …)')) as Partial<NodeJson>;
  } catch (err) {
    if (err instanceof NodeIdentityError) throw err;
    throw new NodeIdentityError(`${configFile} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (config.version !== 1 || typeof config.gateway !== 'string' || !GATEWAY_ADDRESS.test(config.gateway)) {
    throw new NodeIdentityError(`${configFile} is not a node identity of version 1 with a gateway address (host:port)`);
  }
  await completeRenewal(dir);
  const caPem = await readText(path.join(dir, IDENTITY_FILES.ca), 'the pinned CA');
  const certPem = await readText(path.join(dir, IDENTITY_FILES.certificate), 'the node\'s certificate');
  const keyPem = await readSecret(path.join(dir, IDENTITY_FILES.key), 'the node\'s TLS key');
  const sealingKeyPem = await readSecret(path.join(dir, IDENTITY_FILES.sealingKey), 'the node\'s sealing key');
  if (!certificateMatchesKey(certPem, keyPem)) throw new NodeIdentityError(`${path.join(dir, IDENTITY_FILES.certificate)} is not the certificate of ${path.join(dir, IDENTITY_FILES.key)}`);
  const nodeId = nodeIdOf(certPem);
  if (!nodeId) throw new NodeIdentityError(`${path.join(dir, IDENTITY_FILES.certificate)} names no node (no spiffe://glider-gun/node/<id> URI SAN)`);
  if (config.nodeId !== undefined && config.nodeId !== nodeId) {
    throw new NodeIdentityError(`${configFile} says node '${config.nodeId}', but the certificate names '${nodeId}': the certificate is what counts; fix or re-enrol`);
  }
  try {
    if (createPrivateKey(sealingKeyPem).asymmetricKeyType !== 'x25519') throw new Error('not an X25519 key');
  } catch (err) {
    throw new NodeIdentityError(`${path.join(dir, IDENTITY_FILES.sealingKey)} is not an X25519 private key: ${(err as Error).message}`, { cause: err });
  }
  return { dir, gateway: config.gateway, nodeId, caPem, certPem, keyPem, sealingKeyPem };
}

/**
 * Writes a whole identity folder (enrolment; the built-in node, whose identity the control plane makes with
 * the CA it holds). The node id written is the certificate's. node.json comes last: a folder without it is
 * no identity, so a write that stopped half-way is never read as one.
 */
export async function writeNodeIdentity(dir: string, identity: Omit<NodeIdentity, 'dir' | 'nodeId'> & { nodeId?: string }): Promise<NodeIdentity> {
  const nodeId = nodeIdOf(identity.certPem);
  if (!nodeId) throw new NodeIdentityError('the certificate names no node (no spiffe://glider-gun/node/<id> URI SAN)');
  if (identity.nodeId !== undefined && identity.nodeId !== nodeId) throw new NodeIdentityError(`the certificate names node '${nodeId}', not '${identity.nodeId}'`);
  if (!GATEWAY_ADDRESS.test(identity.gateway)) throw new NodeIdentityError(`'${identity.gateway}' is not a gateway address (host:port)`);
  if (!certificateMatchesKey(identity.certPem, identity.keyPem)) throw new NodeIdentityError('the certificate is not for the given key');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  await writeFileAtomic(path.join(dir, IDENTITY_FILES.ca), identity.caPem, 0o644);
  await writeFileAtomic(path.join(dir, IDENTITY_FILES.sealingKey), identity.sealingKeyPem, 0o600);
  await writeKeyPair(dir, identity.keyPem, identity.certPem);
  const config: NodeJson = { version: 1, gateway: identity.gateway, nodeId, files: IDENTITY_FILES };
  await writeFileAtomic(path.join(dir, IDENTITY_FILES.config), `${JSON.stringify(config, null, 2)}\n`, 0o644);
  return { dir, gateway: identity.gateway, nodeId, caPem: identity.caPem, certPem: identity.certPem, keyPem: identity.keyPem, sealingKeyPem: identity.sealingKeyPem };
}

/** tls.key and tls.crt as a pair: both staged whole, then the key renamed into place, then the certificate (completeRenewal mends a stop between). */
async function writeKeyPair(dir: string, keyPem: string, certPem: string): Promise<void> {
  const keyFile = path.join(dir, IDENTITY_FILES.key);
  const certFile = path.join(dir, IDENTITY_FILES.certificate);
  await writeFileAtomic(`${keyFile}.next`, keyPem, 0o600);
  await writeFileAtomic(`${certFile}.next`, certPem, 0o644);
  await rename(`${keyFile}.next`, keyFile);
  await syncDir(dir);
  await rename(`${certFile}.next`, certFile);
  await syncDir(dir);
}

/**
 * Enrols a node: makes its TLS key and sealing key here, sends a CSR, the sealing key's public half and the
 * one-time token to the gateway (trusting only `caPem`), and writes the identity folder. Refuses a folder
 * that already holds an identity: a node is enrolled once; a new enrolment needs a new folder or the old
 * one removed.
 */
export async function enrolNode(opts: { gateway: string; caPem: string; token: string; dir: string }): Promise<NodeIdentity> {
  if (!GATEWAY_ADDRESS.test(opts.gateway)) throw new NodeIdentityError(`'${opts.gateway}' is not a gateway address (host:port)`);
  try {
    new X509Certificate(opts.caPem);
  } catch (err) {
    throw new NodeIdentityError(`the CA is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  const existing = await stat(path.join(opts.dir, IDENTITY_FILES.config)).catch(() => undefined);
  if (existing) throw new NodeIdentityError(`${opts.dir} already holds a node identity (${IDENTITY_FILES.config}); remove the folder to enrol again`);
  const sealing = generateNodeKeyPair();
  const { keyPem, csrPem } = await createKeyAndCsr();
  const api = new NodeApi(opts.gateway, { ca: opts.caPem });
  let answer: CertifiedAnswer;
  try {
    answer = await api.enrol({ token: opts.token, csr: csrPem, sealingPublicKey: sealing.publicKey });
  } finally {
    api.close();
  }
  const nodeId = checkCertificate(answer.certificate, keyPem, [opts.caPem, ...(answer.caCertificate ? [answer.caCertificate] : [])]);
  if (answer.nodeId !== nodeId) throw new NodeIdentityError(`the API says this is node '${answer.nodeId}', but the certificate names '${nodeId}'`);
  return writeNodeIdentity(opts.dir, { gateway: opts.gateway, caPem: opts.caPem, certPem: answer.certificate, keyPem, sealingKeyPem: sealing.privateKeyPem });
}

/**
 * A new key and certificate over mTLS with the current one (`POST /v1/node/certificate`), written to the
 * folder as a pair. Answers the identity with them; the caller swaps its connections over.
 */
export async function renewCertificate(identity: NodeIdentity, api?: NodeApi): Promise<NodeIdentity> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const own = api ?? new NodeApi(identity.gateway, { ca: identity.caPem, cert: identity.certPem, key: identity.keyPem });
  let answer: CertifiedAnswer;
  try {
    answer = await own.renewCertificate(csrPem);
  } finally {
    if (!api) own.close();
  }
  checkCertificate(answer.certificate, keyPem, [identity.caPem, ...(answer.caCertificate ? [answer.caCertificate] : [])], identity.nodeId);
  await writeKeyPair(identity.dir, keyPem, answer.certificate);
  return { ...identity, certPem: answer.certificate, keyPem };
}

/** When a certificate is due for renewal: once a third of its lifetime is left. */
export function renewalDue(certPem: string): Date {
  const cert = new X509Certificate(certPem);
  const from = Date.parse(cert.validFrom);
  const to = certificateNotAfter(certPem).getTime();
  return new Date(to - (to - from) / 3);
}

/** The public half of the sealing key (base64 SPKI DER), as registered at enrolment. */
export function sealingPublicKey(identity: Pick<NodeIdentity, 'sealingKeyPem'>): string {
  return createPublicKey(createPrivateKey(identity.sealingKeyPem)).export({ type: 'spki', format: 'der' }).toString('base64');
}
