import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';

/**
 * Encryption at rest: AES-256-GCM with a random 96-bit nonce. The blob is
 * `version (1) | key id (8) | nonce (12) | tag (16) | ciphertext`, so a wrong key is told apart from a
 * corrupted blob and keys can be rotated later.
 */
const VERSION = 1;

/**
 * Why a sealed value could not be opened: `wrong-key` (sealed under another key: the installation's key
 * changed, which no retry or rollback mends), `not-sealed` (not a blob of ours at all), `altered` (the
 * authentication failed: the bytes, or where they were bound to (the associated data), are not those sealed).
 */
export class SealedValueError extends Error {
  constructor(
    readonly code: 'wrong-key' | 'not-sealed' | 'altered',
    message: string,
  ) {
    super(message);
    this.name = 'SealedValueError';
  }
}

export class SecretBox {
  private readonly keyId: Buffer;

  constructor(private readonly key: Buffer) {
    if (key.length !== 32) throw new Error('the encryption key must be 32 bytes');
    this.keyId = createHash('sha256').update(key).digest().subarray(0, 8);
  }

  seal(plaintext: Buffer, associatedData = ''): Buffer {
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.key, nonce);
    cipher.setAAD(Buffer.from(associatedData));
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Buffer.from([VERSION]), this.keyId, nonce, cipher.getAuthTag(), ciphertext]);
  }

  open(blob: Buffer, associatedData = ''): Buffer {
    if (blob.length < 37 || blob[0] !== VERSION) throw new SealedValueError('not-sealed', 'not a sealed value');
    if (!blob.subarray(1, 9).equals(this.keyId)) {
      throw new SealedValueError('wrong-key', `sealed with another key (key id ${blob.subarray(1, 9).toString('hex')}; this key's id is ${this.keyId.toString('hex')})`);
    }
    const decipher = createDecipheriv('aes-256-gcm', this.key, blob.subarray(9, 21));
    decipher.setAAD(Buffer.from(associatedData));
    decipher.setAuthTag(blob.subarray(21, 37));
    try {
      return Buffer.concat([decipher.update(blob.subarray(37)), decipher.final()]);
    } catch {
      throw new SealedValueError('altered', 'its authentication fails: altered, or stored under another name than it was sealed for');
    }
  }
}

/**
 * Sealing to a node: values that only that node can read, so they can travel through Temporal (whose
 * history anyone with UI access can read) as an opaque blob. X25519 key agreement with a fresh key per
 * message, HKDF-SHA256, AES-256-GCM.
 */
export interface SealedForNode {
  v: 1;
  /** The sender's one-time public key, SPKI DER, base64. */
  epk: string;
  nonce: string;
  tag: string;
  ct: string;
}

export function generateNodeKeyPair(): { publicKey: string; privateKeyPem: string } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return {
    publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

function deriveKey(shared: Buffer, epk: Buffer, recipient: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, Buffer.concat([epk, recipient]), 'glider-gun sealed-for-node v1', 32));
}

const spki = (base64: string): KeyObject => createPublicKey({ key: Buffer.from(base64, 'base64'), format: 'der', type: 'spki' });

export function sealForNode(nodePublicKey: string, plaintext: Buffer): SealedForNode {
  const recipient = spki(nodePublicKey);
  const eph = generateKeyPairSync('x25519');
  const epk = eph.publicKey.export({ type: 'spki', format: 'der' });
  const key = deriveKey(diffieHellman({ privateKey: eph.privateKey, publicKey: recipient }), epk, Buffer.from(nodePublicKey, 'base64'));
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return { v: 1, epk: epk.toString('base64'), nonce: nonce.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ct: ct.toString('base64') };
}

export function openSealedForNode(privateKeyPem: string, sealed: SealedForNode): Buffer {
  const privateKey = createPrivateKey(privateKeyPem);
  const ownPublic = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const epk = Buffer.from(sealed.epk, 'base64');
  const key = deriveKey(diffieHellman({ privateKey, publicKey: spki(sealed.epk) }), epk, ownPublic);
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.nonce, 'base64'));
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.ct, 'base64')), decipher.final()]);
}

export const sha256 = (data: string | Buffer): Buffer => createHash('sha256').update(data).digest();
