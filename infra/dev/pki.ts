/** The test cluster's keys and certificates (openssl, EC P-256, 30 days) and the kubeconfigs made of them. */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from './commands.js';

/** The Service IP of the API server (the first of the service range) is in its certificate. */
export const SERVICE_CIDR = '10.96.0.0/16';
const SERVICE_IP = '10.96.0.1';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: CertFiles;
  apiserver: CertFiles;
  apiserverKubeletClient: CertFiles;
  admin: CertFiles;
  controllerManager: CertFiles;
  scheduler: CertFiles;
  kubeletClient: CertFiles;
  kubeletServing: CertFiles;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

const OPENSSL_CONFIG = `[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
`;

async function makeCert(
  pki: string,
  ca: CertFiles,
  name: string,
  subject: string,
  usage: 'serverAuth' | 'clientAuth',
  sans: string[] = [],
): Promise<CertFiles> {
  const files = { cert: path.join(pki, `${name}.crt`), key: path.join(pki, `${name}.key`) };
  const csr = path.join(pki, `${name}.csr`);
  const ext = path.join(pki, `${name}.ext`);
  await writeFile(
    ext,
    [
      '[leaf]',
      'basicConstraints = critical,CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage = ${usage}`,
      'authorityKeyIdentifier = keyid',
      ...(sans.length ? [`subjectAltName = ${sans.join(',')}`] : []),
      '',
    ].join('\n'),
  );
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', files.key]);
  await run('openssl', ['req', '-new', '-config', path.join(pki, 'openssl.cnf'), '-key', files.key, '-subj', subject, '-out', csr]);
  await run('openssl', [
    'x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${randomBytes(12).toString('hex')}`,
    '-days', '30', '-extfile', ext, '-extensions', 'leaf', '-out', files.cert,
  ]);
  await rm(csr);
  await rm(ext);
  return files;
}

export async function makePki(dir: string, hostAddress: string, nodeName: string): Promise<Pki> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, 'openssl.cnf'), OPENSSL_CONFIG);
  const ca = { cert: path.join(dir, 'ca.crt'), key: path.join(dir, 'ca.key') };
  await run('openssl', [
    'req', '-x509', '-new', '-config', path.join(dir, 'openssl.cnf'), '-extensions', 'ca', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', ca.key, '-out', ca.cert, '-days', '30', '-subj', `/CN=glider-gun-test-ca-${nodeName}`,
  ]);
  const serviceAccountKey = path.join(dir, 'sa.key');
  const serviceAccountPub = path.join(dir, 'sa.pub');
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', serviceAccountKey]);
  await run('openssl', ['pkey', '-in', serviceAccountKey, '-pubout', '-out', serviceAccountPub]);
  const apiserverNames = ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local', 'localhost'];
  const [apiserver, apiserverKubeletClient, admin, controllerManager, scheduler, kubeletClient, kubeletServing] = await Promise.all([
    makeCert(dir, ca, 'apiserver', '/CN=kube-apiserver', 'serverAuth', [
      'IP:127.0.0.1', `IP:${hostAddress}`, `IP:${SERVICE_IP}`, ...apiserverNames.map((n) => `DNS:${n}`),
    ]),
    // The apiserver's identity towards kubelets (logs, exec); kubelets ask the apiserver whether it may.
    makeCert(dir, ca, 'apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client', 'clientAuth'),
    makeCert(dir, ca, 'admin', '/O=system:masters/CN=glider-gun-test-admin', 'clientAuth'),
    makeCert(dir, ca, 'controller-manager', '/CN=system:kube-controller-manager', 'clientAuth'),
    makeCert(dir, ca, 'scheduler', '/CN=system:kube-scheduler', 'clientAuth'),
    // The Node authorizer and NodeRestriction know a kubelet by this name and group.
    makeCert(dir, ca, 'kubelet-client', `/O=system:nodes/CN=system:node:${nodeName}`, 'clientAuth'),
    makeCert(dir, ca, 'kubelet-serving', `/CN=${nodeName}`, 'serverAuth', [`DNS:${nodeName}`, `IP:${hostAddress}`, 'IP:127.0.0.1']),
  ]);
  return { dir, ca, apiserver, apiserverKubeletClient, admin, controllerManager, scheduler, kubeletClient, kubeletServing, serviceAccountKey, serviceAccountPub };
}

export async function writeKubeconfig(file: string, server: string, caFile: string, user: CertFiles | { token: string }): Promise<void> {
  const b64 = async (f: string) => (await readFile(f)).toString('base64');
  const credentials =
    'token' in user
      ? [`    token: ${user.token}`]
      : [`    client-certificate-data: ${await b64(user.cert)}`, `    client-key-data: ${await b64(user.key)}`];
  await writeFile(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: glider-gun-test',
      '  cluster:',
      `    server: ${server}`,
      `    certificate-authority-data: ${await b64(caFile)}`,
      'users:',
      '- name: user',
      '  user:',
      ...credentials,
      'contexts:',
      '- name: glider-gun-test',
      '  context:',
      '    cluster: glider-gun-test',
      '    user: user',
      'current-context: glider-gun-test',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
}
