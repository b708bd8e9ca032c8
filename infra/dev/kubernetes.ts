/**
 * A real single-node Kubernetes cluster for the tests, started from code: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, and a kubelet on a containerd of its own (not Docker's), with
 * pods on a CNI bridge, and a local image registry the node pulls from over plain HTTP.
 *
 * Everything lives under one folder (`dir`) and uses ephemeral ports, its own bridge, subnet and cgroup,
 * so several clusters can run side by side and next to a dev stack. `stop()` tears it all down again.
 * The components are built from source on first use (infra/k8s/build.sh, cached by version).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { access, constants, mkdir, readFile, readdir, readlink, rm, rmdir, writeFile } from 'node:fs/promises';
import https from 'node:https';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from './cache.js';
import { freePort } from './ports.js';
import { say as defaultSay, step, waitFor, type Say } from './progress.js';

export const KUBERNETES_VERSION = '1.34.4';
/** The namespace infra/k8s/rbac.yaml sets up for runs, and the ServiceAccount the worker acts as. */
export const RUNS_NAMESPACE = 'glider-gun-runs';
export const WORKER_SERVICE_ACCOUNT = 'glider-gun-worker';

const K8S_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'k8s');
const BUILD_SCRIPT = path.join(K8S_DIR, 'build.sh');
const RBAC_FILE = path.join(K8S_DIR, 'rbac.yaml');
const BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kubectl', 'etcd'];
/** Debian's containernetworking-plugins. */
const CNI_BIN_DIR = '/usr/lib/cni';
const CNI_RESULTS = '/var/lib/cni/results';
const SERVICE_CIDR = '10.96.0.0/16';
const SERVICE_IP = '10.96.0.1';
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function isExecutable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** Runs a command to its end; its stdout, or an error with its stderr. */
function run(command: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { env: opts.env ?? { ...process.env, PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}` }, maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${path.basename(command)} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/**
 * The Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl and
 * etcd), built from the Go module proxy on first use (tens of minutes on a small machine) and cached by
 * version. Returns the folder holding the binaries.
 */
export async function ensureKubernetesBinaries(out: Say = defaultSay): Promise<string> {
  const binDir = path.join(cacheDir('kubernetes', KUBERNETES_VERSION), 'bin');
  const present = await Promise.all(BINARIES.map((b) => isExecutable(path.join(binDir, b))));
  if (present.every(Boolean)) return binDir;
  const folder = await step(`building Kubernetes ${KUBERNETES_VERSION} and etcd from the Go module proxy (first time only; half an hour or more on 2 cores)`, () =>
    new Promise<string>((resolve, reject) => {
      const child = spawn('bash', [BUILD_SCRIPT], {
        env: { ...process.env, K8S_VERSION: KUBERNETES_VERSION, PATH: `${process.env.PATH ?? ''}:/usr/local/go/bin:${SYSTEM_PATH}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let partial = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) if (line.trim()) out(`  ${line.replace(/^\[k8s-build\] /, '')}`);
      });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve(stdout.trim().split('\n').pop() ?? '') : reject(new Error(`${BUILD_SCRIPT} failed (exit ${code})`))));
    }),
  out, 60_000);
  return path.join(folder, 'bin');
}

/** A daemon of the cluster, its output in a log file. */
interface Daemon {
  name: string;
  logFile: string;
  child: ChildProcess;
  /** Why it ended, once it has. */
  exit: string | undefined;
  stop(graceMs?: number): Promise<void>;
}

/** Daemons still running; killed if this process exits without stopping its cluster. */
const running = new Set<ChildProcess>();
let exitHook = false;

/**
 * Starts a daemon in a process group of its own, so a Ctrl-C in the terminal reaches only the test
 * runner, which then stops the cluster in order (the kubelet first, pods with it).
 */
function startDaemon(name: string, binary: string, args: string[], logDir: string, env?: NodeJS.ProcessEnv): Daemon {
  const logFile = path.join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(binary, args, { stdio: ['ignore', fd, fd], detached: true, env: env ?? { ...process.env, PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}` } });
  } finally {
    closeSync(fd);
  }
  running.add(child);
  child.on('exit', () => running.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
  const daemon: Daemon = {
    name,
    logFile,
    child,
    exit: undefined,
    async stop(graceMs = 10_000) {
      if (daemon.exit !== undefined) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await done;
      clearTimeout(timer);
    },
  };
  child.on('error', (err) => (daemon.exit = `could not start: ${err.message}`));
  child.on('exit', (code, signal) => (daemon.exit = signal ? `killed by ${signal}` : `exited with ${code}`));
  return daemon;
}

async function tail(file: string, lines = 40): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines - 1).join('\n');
}

/** A readiness check's verdict that waiting longer will not change. */
class Hopeless extends Error {}

/**
 * Waits for a daemon's readiness check (as progress.ts's waitFor, but giving up at once when the daemon
 * dies or the check says Hopeless); on failure prints the end of the daemon's log.
 */
async function waitForDaemon(daemon: Daemon, what: string, check: () => Promise<unknown>, timeoutMs: number, out: Say): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let nextReport = Date.now() + 5_000;
  for (;;) {
    let failure: Error | undefined;
    try {
      if (daemon.exit !== undefined) throw new Hopeless(`${daemon.name} ${daemon.exit}`);
      await check();
      return;
    } catch (err) {
      const last = err instanceof Error ? err : new Error(String(err));
      if (last instanceof Hopeless) failure = last;
      else if (Date.now() > deadline) failure = new Error(`${what} not ready after ${timeoutMs / 1000}s: ${last.message}`);
    }
    if (failure) {
      out(`${daemon.name} did not come up (${failure.message}); the end of ${daemon.logFile}:\n${await tail(daemon.logFile)}`);
      throw failure;
    }
    if (Date.now() > nextReport) {
      out(`waiting for ${what} ...`);
      nextReport = Date.now() + 5_000;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** GET over HTTP(S); fails unless the status is 2xx. */
function get(url: string, tls: https.RequestOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = (url.startsWith('https:') ? https : http).get(url, { ...tls, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode} ${body.slice(0, 200)}`))));
    });
    request.on('timeout', () => request.destroy(new Error(`${url}: timed out`)));
    request.on('error', reject);
  });
}

// ---------------------------------------------------------------------------------------------------------
// PKI

interface CertFiles {
  cert: string;
  key: string;
}

interface Pki {
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

async function makePki(dir: string, hostAddress: string, nodeName: string): Promise<Pki> {
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

async function writeKubeconfig(file: string, server: string, caFile: string, user: CertFiles | { token: string }): Promise<void> {
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

// ---------------------------------------------------------------------------------------------------------
// Network: a bridge of our own, whose address is the pods' gateway and the host address pods can reach.

interface PodNetwork {
  bridge: string;
  subnet: string;
  gateway: string;
}

async function createPodNetwork(id: string): Promise<PodNetwork> {
  const used = (await run('ip', ['-4', '-o', 'addr'])) + (await run('ip', ['-4', 'route']));
  const candidates = Array.from({ length: 256 }, (_, i) => i).filter((i) => !used.includes(`10.244.${i}.`));
  if (candidates.length === 0) throw new Error('no free /24 left in 10.244.0.0/16 for the pod network');
  const third = candidates[randomBytes(2).readUInt16BE() % candidates.length]!;
  const network = { bridge: `gg${id}`, subnet: `10.244.${third}.0/24`, gateway: `10.244.${third}.1` };
  await run('ip', ['link', 'add', 'name', network.bridge, 'type', 'bridge']);
  await run('ip', ['addr', 'add', `${network.gateway}/24`, 'dev', network.bridge]);
  await run('ip', ['link', 'set', network.bridge, 'up']);
  return network;
}

function cniConfig(network: PodNetwork, ipamDir: string, name: string): string {
  return JSON.stringify(
    {
      cniVersion: '0.4.0',
      name,
      plugins: [
        {
          type: 'bridge',
          bridge: network.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: network.subnet, gateway: network.gateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: ipamDir },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        // Docker sets the FORWARD policy to DROP, and bridged traffic passes iptables (br_netfilter): this
        // plugin accepts the pods' own traffic.
        { type: 'firewall' },
      ],
    },
    null,
    2,
  );
}

// ---------------------------------------------------------------------------------------------------------
// cgroups (v1 here): the kubelet's pods live under a cgroup root of this cluster's own.

const CGROUP_V1 = '/sys/fs/cgroup';

/** The v1 hierarchies; with `unified`, also the cgroup2 one runc uses beside them (hybrid mode). */
async function cgroupHierarchies(withUnified = false): Promise<string[]> {
  const entries = await readdir(CGROUP_V1, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && (withUnified || e.name !== 'unified')).map((e) => e.name);
}

async function createCgroupRoot(name: string): Promise<void> {
  for (const controller of await cgroupHierarchies()) {
    const dir = path.join(CGROUP_V1, controller, name);
    await mkdir(dir, { recursive: true });
    if (controller === 'cpuset') {
      // A new cpuset starts empty; a child can only take what its parent has.
      for (const file of ['cpuset.cpus', 'cpuset.mems']) {
        await writeFile(path.join(dir, file), await readFile(path.join(CGROUP_V1, controller, file), 'utf8'));
      }
    }
  }
}

async function removeCgroupTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries) if (e.isDirectory()) await removeCgroupTree(path.join(dir, e.name));
  await rmdir(dir).catch(() => undefined);
}

// ---------------------------------------------------------------------------------------------------------
// The sandbox ("pause") image: registry.k8s.io can't be reached, so we make one: a static C program.

const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void down(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  struct sigaction a = {0}, r = {0};
  a.sa_handler = down; sigaction(SIGINT, &a, NULL); sigaction(SIGTERM, &a, NULL);
  r.sa_handler = reap; r.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &r, NULL);
  for (;;) pause();
}
`;

async function ensurePauseImage(workDir: string): Promise<string> {
  const ref = `glider-gun/pause:${createHash('sha256').update(PAUSE_C).digest('hex').slice(0, 12)}`;
  const known = await run('docker', ['image', 'inspect', ref]).then(
    () => true,
    () => false,
  );
  if (known) return ref;
  const dir = path.join(workDir, 'pause');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'pause.c'), PAUSE_C);
  await run('gcc', ['-static', '-Os', '-s', '-o', path.join(dir, 'pause'), path.join(dir, 'pause.c')]).catch((err: unknown) => {
    throw new Error(`${String(err)}\n(gcc and libc6-dev are needed for the pause image: infra/dev/provision-host.sh installs them)`);
  });
  const tar = await run('tar', ['-C', dir, '-cf', path.join(dir, 'pause.tar'), 'pause']).then(() => path.join(dir, 'pause.tar'));
  await run('docker', ['import', '--change', 'ENTRYPOINT ["/pause"]', tar, ref]);
  return ref;
}

// ---------------------------------------------------------------------------------------------------------
// containerd

function containerdConfig(opts: { root: string; state: string; socket: string; optDir: string; runcRoot: string; sandboxImage: string; cniConfDir: string; registryHosts: string }): string {
  const q = (s: string) => JSON.stringify(s);
  return `version = 2
root = ${q(opts.root)}
state = ${q(opts.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${q(opts.socket)}

[ttrpc]
  address = ${q(`${opts.socket}.ttrpc`)}

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(opts.optDir)}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(opts.sandboxImage)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Never ask for an oom_score_adj below containerd's own: lowering it needs CAP_SYS_RESOURCE, which a
  # sandboxed root may lack (then runc fails with "can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ${q(opts.runcRoot)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(CNI_BIN_DIR)}
    conf_dir = ${q(opts.cniConfDir)}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ${q(opts.registryHosts)}
`;
}

// ---------------------------------------------------------------------------------------------------------

/**
 * Tags a local Docker image into a registry (host:port) and pushes it; returns the reference to pull.
 * `glider-gun/busybox:abc` becomes `<registry>/glider-gun/busybox:abc`; a registry host in the local name is replaced.
 */
export async function pushImageTo(registry: string, localRef: string): Promise<string> {
  const [first, ...rest] = localRef.split('/');
  const withoutHost = rest.length > 0 && /[.:]|^localhost$/.test(first!) ? rest.join('/') : localRef;
  const target = `${registry}/${withoutHost.includes(':') ? withoutHost : `${withoutHost}:latest`}`;
  await run('docker', ['tag', localRef, target]);
  try {
    await run('docker', ['push', '--quiet', target], { timeoutMs: 300_000 });
  } finally {
    // Only the tag goes: the image stays under its own name, and ports don't pile up in `docker images`.
    await run('docker', ['rmi', target]).catch(() => undefined);
  }
  return target;
}

export interface ImageRegistry {
  /** host:port on 127.0.0.1, plain HTTP (the Docker engine pushes there without configuration). */
  address: string;
  stop(): Promise<void>;
}

/**
 * Debian's docker-registry (distribution) on 127.0.0.1, storing under `dir`: the test cluster's registry,
 * and one a test starts for itself (`readOnly`: one that refuses pushes).
 */
export async function startImageRegistry(opts: { dir: string; logDir?: string; port?: number; readOnly?: boolean; say?: Say }): Promise<ImageRegistry> {
  const out = opts.say ?? defaultSay;
  const address = `127.0.0.1:${opts.port ?? (await freePort())}`;
  await mkdir(opts.dir, { recursive: true });
  const config = path.join(opts.dir, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${JSON.stringify(path.join(opts.dir, 'data'))}`,
      '  delete:',
      '    enabled: true',
      ...(opts.readOnly ? ['  maintenance:', '    readonly:', '      enabled: true'] : []),
      'http:',
      `  addr: ${address}`,
      '',
    ].join('\n'),
  );
  const daemon = startDaemon('registry', 'docker-registry', ['serve', config], opts.logDir ?? opts.dir);
  try {
    await waitForDaemon(daemon, `the registry at ${address}`, () => get(`http://${address}/v2/`), 30_000, out);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  return { address, stop: () => daemon.stop() };
}

/** containerd's hosts.toml for a registry it pulls from over plain HTTP. */
export function registryHostsToml(registry: string): string {
  return `server = "http://${registry}"\n\n[host."http://${registry}"]\n  capabilities = ["pull", "resolve"]\n`;
}

export interface TestCluster {
  /** kubeconfig of a cluster admin (system:masters). */
  adminKubeconfig: string;
  /** kubeconfig with a token of the ServiceAccount glider-gun-worker, bound by infra/k8s/rbac.yaml's Role. */
  workerKubeconfig: string;
  /** The namespace runs go to (infra/k8s/rbac.yaml's). */
  namespace: string;
  /** https://127.0.0.1:<port> */
  apiServerUrl: string;
  /** host:port of the image registry the node pulls from (plain HTTP, 127.0.0.1). */
  registry: string;
  /**
   * containerd's hosts folder (certs.d): another plain-HTTP registry the node should pull from gets a
   * `<host:port>/hosts.toml` here (registryHostsToml), read at each pull.
   */
  registryHostsDir: string;
  /** An address of this host pods can reach (their gateway): listen on it for pods to call back. */
  hostAddress: string;
  nodeName: string;
  /** The folder with kubectl and the other components. */
  binDir: string;
  /** Tags a local Docker image into the registry and pushes it; returns the reference pods use. */
  pushImage(localRef: string): Promise<string>;
  /** Runs kubectl (as admin unless another kubeconfig is given); its stdout. */
  kubectl(args: string[], opts?: { kubeconfig?: string; input?: string }): Promise<string>;
  /** Stops everything in reverse order, pods included, and unmounts what the node mounted under dir. */
  stop(): Promise<void>;
}

export interface TestClusterOptions {
  /** Everything of the cluster lives here: keys, data, logs (logs/<daemon>.log), the node's files. */
  dir: string;
  say?: Say;
  namespace?: string;
  /** The components' folder; ensureKubernetesBinaries() otherwise. */
  binDir?: string;
}

/** Starts a single-node cluster; see the file's header. Fails (after cleaning up) if a part does not come up. */
export async function startTestCluster(opts: TestClusterOptions): Promise<TestCluster> {
  const out = opts.say ?? defaultSay;
  const namespace = opts.namespace ?? RUNS_NAMESPACE;
  const dir = path.resolve(opts.dir);
  const id = randomBytes(3).toString('hex');
  const nodeName = `gg-node-${id}`;
  const logDir = path.join(dir, 'logs');
  await mkdir(logDir, { recursive: true });
  out(`Kubernetes test cluster ${nodeName} in ${dir} (daemon logs in ${logDir})`);

  // What stop() does, by phase (parts start in parallel, so the order is explicit rather than reversed).
  const PHASES = ['pods and kubelet', 'controllers', 'containerd', 'mounts and cgroups', 'apiserver', 'etcd and registry', 'network'] as const;
  const cleanups: { phase: number; what: string; fn: () => Promise<unknown> }[] = [];
  const later = (phase: (typeof PHASES)[number], what: string, fn: () => Promise<unknown>) => cleanups.push({ phase: PHASES.indexOf(phase), what, fn });
  // Every caller of stop() waits for the one teardown (a signal handler and the normal path may both call it).
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= teardown());
  const teardown = async () => {
    const started = Date.now();
    for (let phase = 0; phase < PHASES.length; phase++) {
      await Promise.all(
        cleanups
          .filter((c) => c.phase === phase)
          .map((c) => c.fn().catch((err: unknown) => out(`Kubernetes cluster: ${c.what} failed: ${err instanceof Error ? err.message : String(err)}`))),
      );
    }
    out(`Kubernetes test cluster ${nodeName} stopped in ${((Date.now() - started) / 1000).toFixed(1)}s`);
  };

  try {
    const binDir = opts.binDir ?? (await ensureKubernetesBinaries(out));
    const bin = (name: string) => path.join(binDir, name);
    for (const tool of ['containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'docker-registry', 'openssl', 'ip', 'iptables']) {
      await run('sh', ['-c', `command -v ${tool}`]).catch(() => {
        throw new Error(`${tool} is missing: infra/dev/provision-host.sh installs what the test cluster needs`);
      });
    }
    for (const plugin of ['bridge', 'host-local', 'loopback', 'portmap', 'firewall']) {
      if (!(await isExecutable(path.join(CNI_BIN_DIR, plugin)))) throw new Error(`${CNI_BIN_DIR}/${plugin} is missing: apt-get install containernetworking-plugins`);
    }

    const [etcdClientPort, etcdPeerPort, apiPort, kcmPort, schedulerPort, kubeletPort, kubeletHealthzPort, registryPort] = await Promise.all(
      Array.from({ length: 8 }, () => freePort()),
    );
    const apiServerUrl = `https://127.0.0.1:${apiPort}`;
    const registry = `127.0.0.1:${registryPort}`;

    const network = await step('Kubernetes: creating the pod network bridge', () => createPodNetwork(id), out);
    later('network', 'removing the pod network bridge', () => run('ip', ['link', 'del', network.bridge]));
    const hostAddress = network.gateway;
    out(`Kubernetes: pods on ${network.subnet} (bridge ${network.bridge}), host address ${hostAddress}`);

    const pki = await step('Kubernetes: making keys and certificates', () => makePki(path.join(dir, 'pki'), hostAddress, nodeName), out);
    const kubeconfigs = {
      admin: path.join(dir, 'admin.kubeconfig'),
      worker: path.join(dir, 'worker.kubeconfig'),
      controllerManager: path.join(pki.dir, 'controller-manager.kubeconfig'),
      scheduler: path.join(pki.dir, 'scheduler.kubeconfig'),
      kubelet: path.join(pki.dir, 'kubelet.kubeconfig'),
    };
    await writeKubeconfig(kubeconfigs.admin, apiServerUrl, pki.ca.cert, pki.admin);
    await writeKubeconfig(kubeconfigs.controllerManager, apiServerUrl, pki.ca.cert, pki.controllerManager);
    await writeKubeconfig(kubeconfigs.scheduler, apiServerUrl, pki.ca.cert, pki.scheduler);
    await writeKubeconfig(kubeconfigs.kubelet, apiServerUrl, pki.ca.cert, pki.kubeletClient);
    const adminTls = { ca: await readFile(pki.ca.cert), cert: await readFile(pki.admin.cert), key: await readFile(pki.admin.key) };

    const kubectl = (args: string[], o: { kubeconfig?: string; input?: string } = {}) =>
      run(bin('kubectl'), ['--kubeconfig', o.kubeconfig ?? kubeconfigs.admin, '--request-timeout', '30s', ...args], {
        ...(o.input !== undefined ? { input: o.input } : {}),
        timeoutMs: 60_000,
      });

    // The registry and etcd first (the pause image goes to the registry meanwhile).
    const pushImage = (localRef: string) => pushImageTo(registry, localRef);

    const startRegistry = step('Kubernetes: starting the image registry', async () => {
      const daemon = await startImageRegistry({ dir: path.join(dir, 'registry'), logDir, port: registryPort, say: out });
      later('etcd and registry', 'stopping the registry', () => daemon.stop());
      const pause = await ensurePauseImage(dir);
      return pushImage(pause);
    }, out);

    const startEtcd = step('Kubernetes: starting etcd', async () => {
      const daemon = startDaemon(
        'etcd',
        bin('etcd'),
        [
          '--name', nodeName,
          '--data-dir', path.join(dir, 'etcd'),
          '--listen-client-urls', `http://127.0.0.1:${etcdClientPort}`,
          '--advertise-client-urls', `http://127.0.0.1:${etcdClientPort}`,
          '--listen-peer-urls', `http://127.0.0.1:${etcdPeerPort}`,
          '--initial-advertise-peer-urls', `http://127.0.0.1:${etcdPeerPort}`,
          '--initial-cluster', `${nodeName}=http://127.0.0.1:${etcdPeerPort}`,
          '--initial-cluster-state', 'new',
          // A throw-away cluster: no fsync, so a test run does not wait on the disk.
          '--unsafe-no-fsync',
          '--log-level', 'warn',
        ],
        logDir,
      );
      later('etcd and registry', 'stopping etcd', () => daemon.stop());
      await waitForDaemon(daemon, 'etcd', async () => {
        const body = await get(`http://127.0.0.1:${etcdClientPort}/health`);
        if (!body.includes('"health":"true"')) throw new Error(body);
      }, 60_000, out);
    }, out);

    const [sandboxImage] = await Promise.all([startRegistry, startEtcd]);

    // containerd comes up while the apiserver does.
    const containerdDir = path.join(dir, 'containerd');
    const ipamDir = path.join(dir, 'cni', 'ipam');
    const cniNetwork = `glider-gun-${id}`;
    const socket = path.join(dir, 'containerd.sock');
    const ctr = (args: string[]) => run('ctr', ['--address', socket, '--namespace', 'k8s.io', ...args], { timeoutMs: 30_000 });
    const startContainerd = step('Kubernetes: starting containerd (its own instance, with the CRI plugin)', async () => {
      const cniConfDir = path.join(dir, 'cni', 'net.d');
      const registryHosts = path.join(containerdDir, 'certs.d');
      await mkdir(cniConfDir, { recursive: true });
      await mkdir(path.join(registryHosts, registry), { recursive: true });
      await writeFile(path.join(cniConfDir, '10-glider-gun.conflist'), cniConfig(network, ipamDir, cniNetwork));
      // libcni caches each attachment's result there; a pod the kubelet could not tear down leaves one.
      later('mounts and cgroups', 'removing cached CNI results', async () => {
        for (const f of await readdir(CNI_RESULTS).catch(() => [])) if (f.startsWith(`${cniNetwork}-`)) await rm(path.join(CNI_RESULTS, f), { force: true });
      });
      await writeFile(path.join(registryHosts, registry, 'hosts.toml'), registryHostsToml(registry));
      const config = path.join(containerdDir, 'config.toml');
      await writeFile(
        config,
        containerdConfig({
          root: path.join(containerdDir, 'root'),
          state: path.join(containerdDir, 'state'),
          socket,
          optDir: path.join(containerdDir, 'opt'),
          runcRoot: path.join(containerdDir, 'runc'),
          sandboxImage,
          cniConfDir,
          registryHosts,
        }),
      );
      const daemon = startDaemon('containerd', 'containerd', ['--config', config, '--log-level', 'warn'], logDir);
      later('containerd', 'stopping containerd and what it ran', async () => {
        await daemon.stop();
        await killShims(socket, out);
      });
      await waitForDaemon(daemon, 'containerd', async () => {
        const plugins = await run('ctr', ['--address', socket, 'plugins', 'ls'], { timeoutMs: 5000 });
        const cri = plugins.split('\n').find((l) => /\bcri\b/.test(l) && l.includes('io.containerd.grpc.v1'));
        const status = cri?.trim().split(/\s+/).pop();
        if (status === 'error') throw new Hopeless(`containerd's CRI plugin failed to load (see its log)`);
        if (status !== 'ok') throw new Error(`containerd's CRI plugin is ${status ?? 'missing'}`);
      }, 60_000, out);
    }, out);

    const startApiserver = step('Kubernetes: starting kube-apiserver', async () => {
      const daemon = startDaemon(
        'kube-apiserver',
        bin('kube-apiserver'),
        [
          '--etcd-servers', `http://127.0.0.1:${etcdClientPort}`,
          '--bind-address', '0.0.0.0',
          '--advertise-address', hostAddress,
          '--secure-port', String(apiPort),
          '--tls-cert-file', pki.apiserver.cert,
          '--tls-private-key-file', pki.apiserver.key,
          '--client-ca-file', pki.ca.cert,
          '--authorization-mode', 'Node,RBAC',
          '--enable-admission-plugins', 'NodeRestriction',
          '--service-account-issuer', 'https://kubernetes.default.svc.cluster.local',
          '--service-account-key-file', pki.serviceAccountPub,
          '--service-account-signing-key-file', pki.serviceAccountKey,
          '--service-cluster-ip-range', SERVICE_CIDR,
          '--kubelet-client-certificate', pki.apiserverKubeletClient.cert,
          '--kubelet-client-key', pki.apiserverKubeletClient.key,
          '--kubelet-certificate-authority', pki.ca.cert,
          '--kubelet-preferred-address-types', 'InternalIP',
          '--allow-privileged=true',
          '--profiling=false',
          '--cert-dir', path.join(pki.dir, 'apiserver-generated'),
        ],
        logDir,
      );
      later('apiserver', 'stopping kube-apiserver', () => daemon.stop());
      await waitForDaemon(daemon, `kube-apiserver at ${apiServerUrl}`, () => get(`${apiServerUrl}/readyz`, adminTls), 120_000, out);
    }, out);

    await Promise.all([startContainerd, startApiserver]);

    const startControlPlane = Promise.all([
      step('Kubernetes: starting kube-controller-manager', async () => {
        const daemon = startDaemon(
          'kube-controller-manager',
          bin('kube-controller-manager'),
          [
            '--kubeconfig', kubeconfigs.controllerManager,
            '--authentication-kubeconfig', kubeconfigs.controllerManager,
            '--authorization-kubeconfig', kubeconfigs.controllerManager,
            '--bind-address', '127.0.0.1',
            '--secure-port', String(kcmPort),
            '--cert-dir', path.join(pki.dir, 'controller-manager-generated'),
            '--leader-elect=false',
            '--use-service-account-credentials=true',
            '--service-account-private-key-file', pki.serviceAccountKey,
            '--root-ca-file', pki.ca.cert,
            '--cluster-signing-cert-file', pki.ca.cert,
            '--cluster-signing-key-file', pki.ca.key,
            '--profiling=false',
          ],
          logDir,
        );
        later('controllers', 'stopping kube-controller-manager', () => daemon.stop());
        await waitForDaemon(daemon, 'kube-controller-manager', () => get(`https://127.0.0.1:${kcmPort}/healthz`, { rejectUnauthorized: false }), 90_000, out);
      }, out),
      step('Kubernetes: starting kube-scheduler', async () => {
        const daemon = startDaemon(
          'kube-scheduler',
          bin('kube-scheduler'),
          [
            '--kubeconfig', kubeconfigs.scheduler,
            '--authentication-kubeconfig', kubeconfigs.scheduler,
            '--authorization-kubeconfig', kubeconfigs.scheduler,
            '--bind-address', '127.0.0.1',
            '--secure-port', String(schedulerPort),
            '--cert-dir', path.join(pki.dir, 'scheduler-generated'),
            '--leader-elect=false',
            '--profiling=false',
          ],
          logDir,
        );
        later('controllers', 'stopping kube-scheduler', () => daemon.stop());
        await waitForDaemon(daemon, 'kube-scheduler', () => get(`https://127.0.0.1:${schedulerPort}/healthz`, { rejectUnauthorized: false }), 90_000, out);
      }, out),
    ]);

    const cgroupRoot = `glider-gun-${id}`;
    const podLogsDir = path.join(dir, 'pod-logs');
    const kubeletRoot = path.join(dir, 'kubelet');
    const startKubelet = step('Kubernetes: starting the kubelet', async () => {
      await createCgroupRoot(cgroupRoot);
      later('mounts and cgroups', 'removing the pods\' cgroups', async () => {
        for (const hierarchy of await cgroupHierarchies(true)) await removeCgroupTree(path.join(CGROUP_V1, hierarchy, cgroupRoot));
      });
      const config = path.join(dir, 'kubelet-config.yaml');
      await writeFile(
        config,
        JSON.stringify(
          {
            apiVersion: 'kubelet.config.k8s.io/v1beta1',
            kind: 'KubeletConfiguration',
            address: hostAddress,
            port: kubeletPort,
            readOnlyPort: 0,
            healthzBindAddress: '127.0.0.1',
            healthzPort: kubeletHealthzPort,
            tlsCertFile: pki.kubeletServing.cert,
            tlsPrivateKeyFile: pki.kubeletServing.key,
            rotateCertificates: false,
            serverTLSBootstrap: false,
            // The apiserver (logs, exec) shows its client certificate; what it may do is asked back (webhook).
            authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki.ca.cert } },
            authorization: { mode: 'Webhook' },
            containerRuntimeEndpoint: `unix://${socket}`,
            // This machine has cgroup v1, which kubelets refuse since 1.35 unless told so.
            failCgroupV1: false,
            cgroupDriver: 'cgroupfs',
            cgroupRoot: `/${cgroupRoot}`,
            failSwapOn: false,
            podLogsDir,
            volumePluginDir: path.join(dir, 'volume-plugins'),
            // A test machine's disk and memory may be fuller than a production node's: never evict.
            evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '0%', 'nodefs.inodesFree': '0%', 'imagefs.available': '0%', 'imagefs.inodesFree': '0%' },
            imageGCHighThresholdPercent: 100,
            // No systemd inhibitor locks to take.
            shutdownGracePeriod: '0s',
            shutdownGracePeriodCriticalPods: '0s',
            clusterDomain: 'cluster.local',
            resolvConf: '/etc/resolv.conf',
            maxPods: 110,
            // The node reports its status often, so a test sees Ready soon.
            nodeStatusUpdateFrequency: '4s',
            syncFrequency: '10s',
            logging: { format: 'text' },
            // Rotate container logs early (default 10 Mi): the tests show a run's log survives rotation whole.
            containerLogMaxSize: '1Mi',
            containerLogMaxFiles: 2,
            containerLogMonitorInterval: '3s',
          },
          null,
          2,
        ),
      );
      const daemon = startDaemon(
        'kubelet',
        bin('kubelet'),
        ['--config', config, '--kubeconfig', kubeconfigs.kubelet, '--hostname-override', nodeName, '--node-ip', hostAddress, '--root-dir', kubeletRoot, '--v', '1'],
        logDir,
      );
      later('pods and kubelet', 'stopping the kubelet', async () => {
        // Pods go first, through the kubelet, so their sandboxes are torn down properly (network namespace, IP).
        await removeAllPods(kubectl, ctr, ipamDir, out);
        await daemon.stop(15_000);
        await killRemainingContainers(ctr, out);
      });
      await waitForDaemon(daemon, 'the kubelet', () => get(`http://127.0.0.1:${kubeletHealthzPort}/healthz`), 90_000, out);
      await waitForDaemon(daemon, `node ${nodeName} Ready`, async () => {
        const ready = await kubectl(['get', 'node', nodeName, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']);
        if (ready.trim() !== 'True') throw new Error(`node ${nodeName} Ready=${ready || 'unknown'}`);
      }, 120_000, out);
    }, out);
    later('mounts and cgroups', 'unmounting what the node left mounted', () => unmountUnder([dir], out));

    await Promise.all([startControlPlane, startKubelet]);

    await step(`Kubernetes: applying ${path.relative(process.cwd(), RBAC_FILE)} (namespace ${namespace}) and making the worker's kubeconfig`, async () => {
      let rbac = await readFile(RBAC_FILE, 'utf8');
      if (namespace !== RUNS_NAMESPACE) rbac = rbac.replaceAll(RUNS_NAMESPACE, namespace);
      await kubectl(['apply', '-f', '-'], { input: rbac });
      // Pods can't be admitted before the namespace's default ServiceAccount exists (the controller-manager makes it).
      await waitFor(`ServiceAccount default in ${namespace}`, () => kubectl(['-n', namespace, 'get', 'serviceaccount', 'default']), 60_000, out);
      const token = (await kubectl(['-n', namespace, 'create', 'token', WORKER_SERVICE_ACCOUNT, '--duration', '48h'])).trim();
      await writeKubeconfig(kubeconfigs.worker, apiServerUrl, pki.ca.cert, { token });
    }, out);

    return {
      adminKubeconfig: kubeconfigs.admin,
      workerKubeconfig: kubeconfigs.worker,
      namespace,
      apiServerUrl,
      registry,
      registryHostsDir: path.join(containerdDir, 'certs.d'),
      hostAddress,
      nodeName,
      binDir,
      pushImage,
      kubectl,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

type Kubectl = (args: string[], o?: { kubeconfig?: string; input?: string }) => Promise<string>;
type Ctr = (args: string[]) => Promise<string>;

async function runningTasks(ctr: Ctr): Promise<string[]> {
  const listing = await ctr(['tasks', 'ls']);
  return listing
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3 && f[2] !== 'STOPPED')
    .map((f) => f[0]!);
}

/** Deletes every pod at once and waits (briefly) until the kubelet has stopped their containers and sandboxes. */
async function removeAllPods(kubectl: Kubectl, ctr: Ctr, ipamDir: string, out: Say): Promise<void> {
  // Jobs and other owners would make their pods again: they go first, leaving their pods to us (orphan), since
  // the garbage collector would delete them with their own grace period (30s by default).
  await kubectl(['delete', 'jobs,replicasets,daemonsets,statefulsets,deployments', '--all', '--all-namespaces', '--cascade=orphan', '--wait=false', '--request-timeout', '10s']).catch(() => undefined);
  // A grace period of 1s, not a forced deletion: the kubelet would then give each pod its own.
  await kubectl(['delete', 'pods', '--all', '--all-namespaces', '--grace-period=1', '--wait=false', '--request-timeout', '10s']).catch(() => undefined);
  await waitFor('the pods\' containers to stop', async () => {
    const left = await runningTasks(ctr);
    if (left.length > 0) throw new Error(`${left.length} containers still running`);
    // A sandbox's network is torn down after its container stopped: host-local keeps a file per IP in use.
    const ips = (await readdir(ipamDir, { recursive: true }).catch(() => [])).filter((f) => /\d+\.\d+\.\d+\.\d+$/.test(f));
    if (ips.length > 0) throw new Error(`${ips.length} pod IPs still in use`);
  }, 30_000, out).catch((err: unknown) => out(`Kubernetes cluster: ${err instanceof Error ? err.message : String(err)}; killing them`));
}

/** What the kubelet did not stop: killed through containerd, network namespaces unmounted. */
async function killRemainingContainers(ctr: Ctr, out: Say): Promise<void> {
  const containers = (await ctr(['containers', 'ls', '-q'])).split('\n').filter(Boolean);
  if (containers.length === 0) return;
  out(`Kubernetes cluster: removing ${containers.length} container(s) from containerd`);
  const netns = new Set<string>();
  for (const id of containers) {
    const info = await ctr(['containers', 'info', id]).catch(() => '');
    for (const m of info.matchAll(/"path":\s*"(\/var\/run\/netns\/[^"]+|\/run\/netns\/[^"]+)"/g)) netns.add(m[1]!);
  }
  for (const id of await runningTasks(ctr).catch(() => [])) await ctr(['tasks', 'kill', '--signal', 'SIGKILL', '--all', id]).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 500));
  for (const id of containers) {
    await ctr(['tasks', 'delete', '--force', id]).catch(() => undefined);
    await ctr(['containers', 'delete', id]).catch(() => undefined);
  }
  for (const ns of netns) {
    await run('umount', [ns]).catch(() => undefined);
    await rm(ns, { force: true }).catch(() => undefined);
  }
  // libcni's cached results of sandboxes torn down without CNI DEL (ours are also removed by network name).
  for (const id of containers) await rm(path.join(CNI_RESULTS, `cni-loopback-${id}-lo`), { force: true });
}

/** containerd's shims outlive it by design: those serving our containerd go too. */
async function killShims(socket: string, out: Say): Promise<void> {
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const args = cmdline.split('\0');
    if (!args[0]?.includes('containerd-shim')) continue;
    const address = args[args.indexOf('-address') + 1];
    if (args.includes('-address') && address === socket) {
      out(`Kubernetes cluster: killing shim ${pid}`);
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }
}

/** Unmounts every mount below the given folders, deepest first, and the pods' log links in /var/log/containers. */
async function unmountUnder(dirs: string[], out: Say): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const points = mountinfo
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => dirs.some((d) => p.startsWith(`${d}/`)))
    .sort((a, b) => b.length - a.length);
  if (points.length > 0) out(`Kubernetes cluster: unmounting ${points.length} mount(s) under its folder`);
  for (const p of points) await run('umount', [p]).catch(() => run('umount', ['-l', p]));
  // The kubelet links each container's log from /var/log/containers into podLogsDir.
  const links = await readdir('/var/log/containers').catch(() => []);
  for (const link of links) {
    const file = path.join('/var/log/containers', link);
    const target = await readlink(file).catch(() => '');
    if (dirs.some((d) => target.startsWith(`${d}/`))) await rm(file, { force: true });
  }
}
