/**
 * A node's identity folder (workers/node-identity.ts): written atomically with private keys, read back only
 * when whole and consistent, the node id taken from the certificate alone; enrolment against a gateway that
 * is trusted only through the pinned CA, and renewal over mTLS.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { X509Certificate, createPrivateKey, createPublicKey } from 'node:crypto';
import { mkdtemp, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import * as x509 from '@peculiar/x509';
import { createCa, createKeyAndCsr, issueServerCertificate, nodeIdOf, signNodeCertificate, type CertificateAuthority } from '../../core/pki.js';
import { generateNodeKeyPair } from '../../core/crypto.js';
import {
  IDENTITY_FILES,
  enrolNode,
  readNodeIdentity,
  renewCertificate,
  renewalDue,
  sealingPublicKey,
  writeFileAtomic,
  writeNodeIdentity,
  type NodeIdentity,
} from '../../workers/node-identity.js';

const spkiOfKey = (keyPem: string) => createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' }).toString('base64');
const spkiOfCsr = (csrPem: string) => Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).publicKey.rawData).toString('base64');
const modeOf = async (file: string) => (await stat(file)).mode & 0o777;

describe('the node identity folder', () => {
  let root: string;
  let ca: CertificateAuthority;
  let otherCa: CertificateAuthority;
  const identityFor = async (nodeId: string, signer = ca) => {
    const { keyPem, csrPem } = await createKeyAndCsr();
    return { gateway: 'gateway.example:7443', caPem: signer.certPem, certPem: await signNodeCertificate(signer, csrPem, nodeId), keyPem, sealingKeyPem: generateNodeKeyPair().privateKeyPem };
  };

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'gg-node-identity-'));
    ca = await createCa();
    otherCa = await createCa({ commonName: 'another CA' });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('is written with private keys (0600) in a private folder (0700), nothing temporary left, and read back whole', async () => {
    const dir = path.join(root, 'written');
    const made = await identityFor('edge-1');
    const written = await writeNodeIdentity(dir, made);
    assert.equal(written.nodeId, 'edge-1');
    assert.equal(await modeOf(dir), 0o700);
    assert.equal(await modeOf(path.join(dir, IDENTITY_FILES.key)), 0o600);
    assert.equal(await modeOf(path.join(dir, IDENTITY_FILES.sealingKey)), 0o600);
    assert.deepEqual((await readdir(dir)).sort(), Object.values(IDENTITY_FILES).sort(), 'only the five files: no temporary or staged file left');
    const config = JSON.parse(await readFile(path.join(dir, IDENTITY_FILES.config), 'utf8')) as Record<string, unknown>;
    assert.equal(config.gateway, 'gateway.example:7443');
    assert.equal(config.nodeId, 'edge-1');
    const read = await readNodeIdentity(dir);
    assert.deepEqual(read, { ...made, dir, nodeId: 'edge-1' });
  });

  it('keys are 0600 whatever the umask', async () => {
    const previous = process.umask(0o000);
    try {
      const dir = path.join(root, 'umask');
      await writeNodeIdentity(dir, await identityFor('edge-umask'));
      assert.equal(await modeOf(path.join(dir, IDENTITY_FILES.key)), 0o600);
      assert.equal(await modeOf(path.join(dir, IDENTITY_FILES.sealingKey)), 0o600);
    } finally {
      process.umask(previous);
    }
  });

  it('replaces a file by renaming a whole new one over it: a reader of the old one never sees half of the new', async () => {
    const file = path.join(root, 'atomic.txt');
    await writeFileAtomic(file, 'old content', 0o600);
    const before = await stat(file);
    const reader = await open(file, 'r');
    try {
      await writeFileAtomic(file, 'new content, longer than the old', 0o600);
      assert.equal(await readFile(file, 'utf8'), 'new content, longer than the old');
      assert.notEqual((await stat(file)).ino, before.ino, 'a new file took the name: the old was not written in place');
      assert.equal((await reader.readFile('utf8')), 'old content', 'whoever had the old file open still reads all of it');
    } finally {
      await reader.close();
    }
    assert.deepEqual((await readdir(root)).filter((n) => n.includes('atomic') && n.endsWith('.tmp')), []);
  });

  it('takes the node id from the certificate only: node.json cannot name another node', async () => {
    const dir = path.join(root, 'claims');
    await writeNodeIdentity(dir, await identityFor('edge-2'));
    const configFile = path.join(dir, IDENTITY_FILES.config);
    const config = JSON.parse(await readFile(configFile, 'utf8')) as Record<string, unknown>;
    await writeFile(configFile, JSON.stringify({ ...config, nodeId: 'someone-else' }));
    await assert.rejects(readNodeIdentity(dir), /the certificate names 'edge-2'/);
    const { nodeId: _dropped, ...withoutId } = config;
    await writeFile(configFile, JSON.stringify(withoutId));
    assert.equal((await readNodeIdentity(dir)).nodeId, 'edge-2', 'without a claim, the certificate still names it');
    await assert.rejects(writeNodeIdentity(path.join(root, 'claims-2'), { ...(await identityFor('edge-3')), nodeId: 'edge-4' }), /names node 'edge-3', not 'edge-4'/);
  });

  it('refuses a folder whose key others may read, or whose certificate is not for its key', async () => {
    const dir = path.join(root, 'refused');
    const made = await identityFor('edge-5');
    await writeNodeIdentity(dir, made);
    const { chmod } = await import('node:fs/promises');
    await chmod(path.join(dir, IDENTITY_FILES.key), 0o644);
    await assert.rejects(readNodeIdentity(dir), /may be read by others \(mode 644\): chmod 600/);
    await chmod(path.join(dir, IDENTITY_FILES.key), 0o600);
    await writeFile(path.join(dir, IDENTITY_FILES.certificate), (await identityFor('edge-5')).certPem);
    await assert.rejects(readNodeIdentity(dir), /is not the certificate of/);
    await assert.rejects(readNodeIdentity(path.join(root, 'nothing-here')), /enrol the node first/);
  });

  it('mends a renewal that stopped between its renames, and drops one that stopped before them', async () => {
    const dir = path.join(root, 'renewal-crash');
    const old = await writeNodeIdentity(dir, await identityFor('edge-6'));
    const { keyPem, csrPem } = await createKeyAndCsr();
    const certPem = await signNodeCertificate(ca, csrPem, 'edge-6');
    const keyFile = path.join(dir, IDENTITY_FILES.key);
    const certFile = path.join(dir, IDENTITY_FILES.certificate);
    // Stopped before the key's rename: both staged, the old pair whole.
    await writeFileAtomic(`${keyFile}.next`, keyPem, 0o600);
    await writeFileAtomic(`${certFile}.next`, certPem, 0o644);
    const before = await readNodeIdentity(dir);
    assert.equal(before.certPem, old.certPem, 'the old pair, still valid, is kept');
    assert.deepEqual((await readdir(dir)).filter((n) => n.endsWith('.next')), [], 'the staged files are dropped');
    // Stopped between the renames: the new key in place, the old certificate, the new one staged.
    await writeFileAtomic(keyFile, keyPem, 0o600);
    await writeFileAtomic(`${certFile}.next`, certPem, 0o644);
    const mended = await readNodeIdentity(dir);
    assert.equal(mended.keyPem, keyPem);
    assert.equal(mended.certPem, certPem, 'the staged certificate of the new key is put in place');
  });

  it('says when the certificate is due: a third of its lifetime before it ends', async () => {
    const { certPem } = await identityFor('edge-7');
    const cert = new X509Certificate(certPem);
    const from = Date.parse(cert.validFrom);
    const to = Date.parse(cert.validTo);
    assert.equal(renewalDue(certPem).getTime(), to - (to - from) / 3);
  });

  describe('enrolment', () => {
    it('sends a CSR of the key it keeps and the public half of its sealing key, and writes what the gateway answers', async () => {
      let csrSeen = '';
      let sealingSeen = '';
      const signing = await fakeGatewayAsync(ca, async (body) => {
        csrSeen = String(body.csr);
        sealingSeen = String(body.sealingPublicKey);
        const certificate = await signNodeCertificate(ca, csrSeen, 'edge-8');
        return { nodeId: 'edge-8', certificate, caCertificate: ca.certPem, notAfter: new X509Certificate(certificate).validTo };
      });
      try {
        const dir = path.join(root, 'enrolled');
        const identity = await enrolNode({ gateway: signing.address, caPem: ca.certPem, token: 'tok-1', dir });
        assert.equal(identity.nodeId, 'edge-8');
        assert.equal(spkiOfCsr(csrSeen), spkiOfKey(await readFile(path.join(dir, IDENTITY_FILES.key), 'utf8')), 'the CSR is for the key written to tls.key');
        assert.equal(sealingSeen, sealingPublicKey({ sealingKeyPem: await readFile(path.join(dir, IDENTITY_FILES.sealingKey), 'utf8') }), 'the sealing key registered is the one written');
        assert.equal(nodeIdOf(await readFile(path.join(dir, IDENTITY_FILES.certificate), 'utf8')), 'edge-8');
        assert.equal(await readFile(path.join(dir, IDENTITY_FILES.ca), 'utf8'), ca.certPem, 'the pinned CA is kept');
        await assert.rejects(enrolNode({ gateway: signing.address, caPem: ca.certPem, token: 'tok-1', dir }), /already holds a node identity/);
      } finally {
        await signing.close();
      }
    });

    it('trusts only the pinned CA: a gateway with a certificate of another CA gets no token, and nothing is written', async () => {
      let calls = 0;
      const impostor = await fakeGatewayAsync(otherCa, () => {
        calls += 1;
        return Promise.resolve({});
      });
      try {
        const dir = path.join(root, 'impostor');
        await assert.rejects(enrolNode({ gateway: impostor.address, caPem: ca.certPem, token: 'tok-2', dir }), (err: Error) => {
          assert.match(err.message, /certificate the pinned CA does not vouch for/);
          return true;
        });
        assert.equal(calls, 0, 'the request never reached the impostor');
        assert.equal(await stat(path.join(dir, IDENTITY_FILES.config)).catch(() => undefined), undefined);
      } finally {
        await impostor.close();
      }
    });

    it('refuses a certificate that names another node than the API says, or is not for its key', async () => {
      const liar = await fakeGatewayAsync(ca, async (body) => ({ nodeId: 'edge-9', certificate: await signNodeCertificate(ca, String(body.csr), 'edge-10') }));
      const swapped = await fakeGatewayAsync(ca, async () => ({ nodeId: 'edge-11', certificate: await signNodeCertificate(ca, (await createKeyAndCsr()).csrPem, 'edge-11') }));
      try {
        await assert.rejects(enrolNode({ gateway: liar.address, caPem: ca.certPem, token: 't', dir: path.join(root, 'liar') }), /the API says this is node 'edge-9', but the certificate names 'edge-10'/);
        await assert.rejects(enrolNode({ gateway: swapped.address, caPem: ca.certPem, token: 't', dir: path.join(root, 'swapped') }), /not for this node's key/);
      } finally {
        await liar.close();
        await swapped.close();
      }
    });
  });

  it('renews over mTLS: the gateway sees the current certificate, and a new key and certificate replace the pair', async () => {
    const dir = path.join(root, 'renewed');
    const old: NodeIdentity = await writeNodeIdentity(dir, await identityFor('edge-12'));
    const gateway = await fakeGatewayAsync(ca, async (body, peer) => {
      if (!peer) throw new Error('no client certificate');
      const nodeId = nodeIdOf(peer.toString());
      return { nodeId, certificate: await signNodeCertificate(ca, String(body.csr), nodeId!) };
    });
    try {
      const renewed = await renewCertificate({ ...old, gateway: gateway.address });
      assert.equal(gateway.peers[0]?.serialNumber, new X509Certificate(old.certPem).serialNumber, 'the call was made with the current certificate');
      assert.notEqual(renewed.keyPem, old.keyPem, 'a new key');
      assert.equal(renewed.sealingKeyPem, old.sealingKeyPem, 'the sealing key stays: secrets are sealed to it');
      const read = await readNodeIdentity(dir);
      assert.equal(read.certPem, renewed.certPem);
      assert.equal(read.keyPem, renewed.keyPem);
      assert.equal(await modeOf(path.join(dir, IDENTITY_FILES.key)), 0o600);
    } finally {
      await gateway.close();
    }
  });
});

/** A fake gateway whose answers are made asynchronously from the body (and the client's certificate). */
async function fakeGatewayAsync(ca: CertificateAuthority, answer: (body: Record<string, unknown>, peer: X509Certificate | undefined) => Promise<unknown>) {
  const server = await issueServerCertificate(ca, { ipAddresses: ['127.0.0.1'] });
  const peers: X509Certificate[] = [];
  const srv = https.createServer({ key: server.keyPem, cert: server.certPem, ca: [ca.certPem], requestCert: true, rejectUnauthorized: false }, (req, res) => {
    let text = '';
    req.setEncoding('utf8').on('data', (d: string) => (text += d));
    req.on('end', () => {
      const socket = req.socket as TLSSocket;
      const peer = socket.authorized ? socket.getPeerX509Certificate() : undefined;
      if (peer) peers.push(peer);
      answer((text ? JSON.parse(text) : {}) as Record<string, unknown>, peer).then(
        (body) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
        (err: unknown) => res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'REFUSED', message: String(err) })),
      );
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${(srv.address() as AddressInfo).port}`,
    peers,
    close: () =>
      new Promise<void>((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  };
}
