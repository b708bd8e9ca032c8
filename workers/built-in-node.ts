import { createPublicKey } from 'node:crypto';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { enrolBuiltInNode } from '../core/db/nodes.js';
import type { Queryable } from '../core/db/pool.js';
import { loadNodeKey } from '../core/keys.js';
import { certificateNotAfter, createKeyAndCsr, signNodeCertificate, type CertificateAuthority } from '../core/pki.js';
import { writeNodeIdentity } from './node-identity.js';

/**
 * The built-in node's identity, made by the process that hosts it with the CA it holds: a fresh TLS key and
 * certificate at each start, and the sealing key kept in the node's folder. From here on the built-in node is
 * a node like any other: it reaches Temporal and the node API through the gateway, with this certificate.
 */
export async function provisionBuiltInNode(db: Queryable, config: Config, ca: CertificateAuthority, gateway: string): Promise<string> {
  const nodeId = config.node.id;
  const sealingKeyPem = await loadNodeKey(config.node.workDir);
  const sealingPublicKey = createPublicKey(sealingKeyPem).export({ type: 'spki', format: 'der' }).toString('base64');
  const { keyPem, csrPem } = await createKeyAndCsr(`node ${nodeId}`);
  const certPem = await signNodeCertificate(ca, csrPem, nodeId, { days: config.nodes.certificateDays });
  if (!(await enrolBuiltInNode(db, nodeId, 'Docker engine on the machine running Glider Gun', sealingPublicKey, certificateNotAfter(certPem)))) {
    throw new Error(`the built-in node '${nodeId}' was revoked: it is not started (to run it again, delete its row from nodes, or give GLIDERGUN_NODE_ID another id)`);
  }
  const dir = path.join(config.node.workDir, 'identity');
  await writeNodeIdentity(dir, { gateway, caPem: ca.certPem, certPem, keyPem, sealingKeyPem });
  return dir;
}
