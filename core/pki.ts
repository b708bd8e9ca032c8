/**
 * Glider Gun's node CA: it signs the client certificates that name nodes (and the gateway's server
 * certificate in the embedded default). ECDSA P-256 throughout; a node's identity is the one URI SAN
 * `spiffe://glider-gun/node/<id>` (docs/remote-nodes.md), never the subject a CSR asks for.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
/** Clocks of nodes in customer networks drift: a certificate is valid from a little before it was made. */
const BACKDATE_MS = 5 * 60_000;

export const NODE_ID_PATTERN = /^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$/;
export const nodeIdentityUri = (nodeId: string): string => `spiffe://glider-gun/node/${nodeId}`;

export interface CertificateAuthority {
  certPem: string;
  keyPem: string;
}

export interface KeyAndCertificate {
  certPem: string;
  keyPem: string;
}

export class CertificateRequestError extends Error {}

const serial = () => {
  const bytes = randomBytes(16);
  bytes[0]! &= 0x7f; // a positive INTEGER
  return bytes.toString('hex');
};

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importKeyPem(pem: string): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(pem), ALG, false, ['sign']);
}

async function generateKeys(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
}

export async function createCa(opts: { commonName?: string; days?: number } = {}): Promise<CertificateAuthority> {
  const keys = await generateKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${opts.commonName ?? 'Glider Gun node CA'}`,
    notBefore: new Date(now - BACKDATE_MS),
    notAfter: new Date(now + (opts.days ?? 3650) * DAY_MS),
    signingAlgorithm: ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

async function issue(
  ca: CertificateAuthority,
  subject: { name: string; publicKey: CryptoKey | x509.PublicKey },
  opts: { days: number; sans: x509.JsonGeneralName[]; usage: 'client' | 'server'; notBefore?: Date },
): Promise<string> {
  const issuer = new x509.X509Certificate(ca.certPem);
  const notBefore = opts.notBefore ?? new Date(Date.now() - BACKDATE_MS);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: subject.name,
    issuer: issuer.subject,
    notBefore,
    notAfter: new Date(notBefore.getTime() + BACKDATE_MS + opts.days * DAY_MS),
    signingAlgorithm: ALG,
    publicKey: subject.publicKey,
    signingKey: await importKeyPem(ca.keyPem),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([opts.usage === 'client' ? x509.ExtendedKeyUsage.clientAuth : x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(opts.sans, true),
      await x509.AuthorityKeyIdentifierExtension.create(issuer, false),
    ],
  });
  return cert.toString('pem');
}

/** A fresh key and a CSR for it, as a node makes them at enrolment and at each renewal. */
export async function createKeyAndCsr(commonName = 'glider-gun node'): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await generateKeys();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=${commonName}`, keys, signingAlgorithm: ALG });
  return { keyPem: await exportKeyPem(keys.privateKey), csrPem: csr.toString('pem') };
}

/** A CSR whose signature matches its key, an ECDSA P-256 one; else CertificateRequestError. */
export async function checkedCsr(csrPem: string): Promise<x509.Pkcs10CertificateRequest> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new CertificateRequestError(`the CSR cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!(await csr.verify().catch(() => false))) throw new CertificateRequestError('the CSR\'s signature does not match its key');
  const algorithm = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  if (algorithm.name !== 'ECDSA' || algorithm.namedCurve !== 'P-256') {
    throw new CertificateRequestError('the CSR\'s key must be ECDSA P-256');
  }
  return csr;
}

/**
 * Signs a node's client certificate for `nodeId`. Only the CSR's public key is taken (its signature proves
 * the node holds the key); its subject and any names it asks for are ignored.
 */
export async function signNodeCertificate(
  ca: CertificateAuthority,
  csrPem: string,
  nodeId: string,
  opts: { days?: number; notBefore?: Date } = {},
): Promise<string> {
  if (!NODE_ID_PATTERN.test(nodeId)) throw new CertificateRequestError(`'${nodeId}' is not a node id`);
  const csr = await checkedCsr(csrPem);
  return issue(ca, { name: `CN=node ${nodeId}`, publicKey: csr.publicKey }, {
    days: opts.days ?? 30,
    sans: [{ type: 'url', value: nodeIdentityUri(nodeId) }],
    usage: 'client',
    ...(opts.notBefore ? { notBefore: opts.notBefore } : {}),
  });
}

/** A server certificate for the gateway, for names and addresses nodes dial. */
export async function issueServerCertificate(ca: CertificateAuthority, opts: { dnsNames?: string[]; ipAddresses?: string[]; days?: number }): Promise<KeyAndCertificate> {
  const keys = await generateKeys();
  const sans: x509.JsonGeneralName[] = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (sans.length === 0) throw new Error('a server certificate needs at least one name or address');
  const certPem = await issue(ca, { name: `CN=${opts.dnsNames?.[0] ?? opts.ipAddresses?.[0] ?? 'gateway'}`, publicKey: keys.publicKey }, { days: opts.days ?? 365, sans, usage: 'server' });
  return { certPem, keyPem: await exportKeyPem(keys.privateKey) };
}

/** The node id a certificate names in its one `spiffe://glider-gun/node/<id>` URI SAN, if it names one. */
export function nodeIdOf(certPem: string): string | undefined {
  const uris = (new X509Certificate(certPem).subjectAltName ?? '')
    .split(', ')
    .filter((s) => s.startsWith('URI:'))
    .map((s) => s.slice(4));
  if (uris.length !== 1) return undefined;
  const m = /^spiffe:\/\/glider-gun\/node\/(.+)$/.exec(uris[0]!);
  return m && NODE_ID_PATTERN.test(m[1]!) ? m[1] : undefined;
}

export function certificateNotAfter(certPem: string): Date {
  return new Date(new X509Certificate(certPem).validTo);
}
