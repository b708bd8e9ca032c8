import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { generateNodeKeyPair } from './crypto.js';
import { createCa, type CertificateAuthority } from './pki.js';

/**
 * Reads a secret file, or makes it at first start. `wx` makes creation atomic, so two processes starting
 * together agree on one key; mode 0600 keeps it from other users.
 */
async function readOrCreate(file: string, make: () => string): Promise<{ value: string; created: boolean }> {
  try {
    return { value: await readFile(file, 'utf8'), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const value = make();
  try {
    await writeFile(file, value, { mode: 0o600, flag: 'wx' });
    return { value, created: true };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return { value: await readFile(file, 'utf8'), created: false };
    throw err;
  }
}

/** The key that encrypts sensitive values at rest: from configuration, else generated once into the data folder. */
export async function loadEncryptionKey(opts: { base64?: string | undefined; file: string }): Promise<Buffer> {
  const text = opts.base64 ?? (await readOrCreate(opts.file, () => `${randomBytes(32).toString('base64')}\n`)).value;
  const key = Buffer.from(text.trim(), 'base64');
  if (key.length !== 32) {
    throw new Error(`the encryption key ${opts.base64 ? 'in GLIDERGUN_ENCRYPTION_KEY' : `in ${opts.file}`} must be 32 bytes, base64-encoded`);
  }
  return key;
}

/** A node's X25519 key pair; the private half never leaves the node. */
export async function loadNodeKey(workDir: string): Promise<string> {
  return (await readOrCreate(path.join(workDir, 'node-key.pem'), () => generateNodeKeyPair().privateKeyPem)).value;
}

/** The secret the gateway presents to the API (X-Glider-Gateway): from its file, else made once. */
export async function loadGatewaySecret(file: string): Promise<string> {
  const secret = (await readOrCreate(file, () => `${randomBytes(32).toString('base64url')}\n`)).value.trim();
  if (secret.length < 32) throw new Error(`the gateway secret in ${file} is too short: 32 characters at least`);
  return secret;
}

/** The gateway's task-token keys: `<id> <base64 key>` per line, the first signs (infra/images/gateway). */
export async function loadGatewayTokenKeys(file: string): Promise<string> {
  return (await readOrCreate(file, () => `1 ${randomBytes(32).toString('base64')}\n`)).value;
}

/**
 * The node CA: from configuration, else made at first start (cert and key in one file, created atomically, so
 * processes starting together agree on one CA).
 */
export async function loadNodeCa(opts: { files: { certFile: string; keyFile: string } | undefined; defaultFile: string }): Promise<CertificateAuthority> {
  if (opts.files) return { certPem: await readFile(opts.files.certFile, 'utf8'), keyPem: await readFile(opts.files.keyFile, 'utf8') };
  let text = await readFile(opts.defaultFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (text === undefined) {
    const made = await createCa();
    text = (await readOrCreate(opts.defaultFile, () => `${made.certPem}${made.keyPem}`)).value;
  }
  const cert = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----\n?/.exec(text)?.[0];
  const key = /-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----\n?/.exec(text)?.[0];
  if (!cert || !key) throw new Error(`${opts.defaultFile} must hold the node CA's certificate and its PKCS#8 key (PEM)`);
  return { certPem: cert, keyPem: key };
}
