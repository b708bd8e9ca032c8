/**
 * A real single-node Kubernetes cluster for the tests, started from code: etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, and a kubelet on a containerd of its own (not Docker's), with
 * pods on a CNI bridge, and a local image registry the node pulls from over plain HTTP.
 *
 * Everything lives under one folder (`dir`) and uses ephemeral ports, its own bridge, subnet, cgroup root,
 * containerd socket and CNI network, named after the folder (leftovers.ts, clusterNames), so several clusters
 * can run side by side and next to a dev stack's, and what a dead one left is found again from its folder.
 * Its daemons die with the process that started them (daemons.ts). `stop()` tears it all down in order.
 * The components are built from source on first use (infra/k8s/build.sh, cached by version).
 *
 * The parts, one concern each: pki.ts, pod-network.ts, cgroups.ts, containerd.ts, registry.ts, mounts.ts.
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cacheDir } from './cache.js';
import { get, isExecutable, run, SYSTEM_PATH } from './commands.js';
import { containerdConfig, ensurePauseImage, killRemainingContainers, killShims, removeAllPods } from './containerd.js';
import { createCgroupRoot, removeCgroupRoot } from './cgroups.js';
import { Hopeless, startDaemon, waitForDaemon } from './daemons.js';
import { clusterNames } from './leftovers.js';
import { unmountUnder } from './mounts.js';
import { makePki, SERVICE_CIDR, writeKubeconfig } from './pki.js';
import { CNI_BIN_DIR, CNI_RESULTS, cniConfig, createPodNetwork, removePodNetwork } from './pod-network.js';
import { freePort } from './ports.js';
import { say as defaultSay, step, waitFor, type Say } from './progress.js';
import { pushImageTo, registryHostsToml, startImageRegistry } from './registry.js';

// Tests import the registry helpers from here.
export { pushImageTo, registryHostsToml, startImageRegistry, type ImageRegistry } from './registry.js';

export const KUBERNETES_VERSION = '1.34.4';
/** The namespace infra/k8s/rbac.yaml sets up for runs, and the ServiceAccount the worker acts as. */
export const RUNS_NAMESPACE = 'glider-gun-runs';
export const WORKER_SERVICE_ACCOUNT = 'glider-gun-worker';

const K8S_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'k8s');
const BUILD_SCRIPT = path.join(K8S_DIR, 'build.sh');
const RBAC_FILE = path.join(K8S_DIR, 'rbac.yaml');
const BINARIES = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kubectl', 'etcd'];

/**
 * The Kubernetes components (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl and
 * etcd), built from the Go module proxy on first use (about 8 minutes on a quiet 2-core machine) and cached by
 * version. Returns the folder holding the binaries.
 */
export async function ensureKubernetesBinaries(out: Say = defaultSay): Promise<string> {
  const binDir = path.join(cacheDir('kubernetes', KUBERNETES_VERSION), 'bin');
  const present = await Promise.all(BINARIES.map((b) => isExecutable(path.join(binDir, b))));
  if (present.every(Boolean)) return binDir;
  const folder = await step(`building Kubernetes ${KUBERNETES_VERSION} and etcd from the Go module proxy (first time only; about 8 minutes on a quiet 2-core machine, longer on a busy one)`, () =>
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
  /**
   * A registry (host:port, plain HTTP) the node pulls from and pushImage pushes to, kept by the caller (the
   * dev stack keeps its images across restarts); otherwise the cluster runs one of its own under `dir`.
   */
  registry?: string;
}

/** Starts a single-node cluster; see the file's header. Fails (after cleaning up) if a part does not come up. */
export async function startTestCluster(opts: TestClusterOptions): Promise<TestCluster> {
  const out = opts.say ?? defaultSay;
  const namespace = opts.namespace ?? RUNS_NAMESPACE;
  const dir = path.resolve(opts.dir);
  // Host-wide names (bridge, cgroup, CNI network) follow from the folder: what a dead cluster left is found from it.
  const { nodeName, bridge, cgroupRoot, cniNetwork, socket } = clusterNames(dir);
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
    const registry = opts.registry ?? `127.0.0.1:${registryPort}`;

    const network = await step('Kubernetes: creating the pod network bridge', () => createPodNetwork(bridge), out);
    later('network', 'removing the pod network bridge', () => removePodNetwork(network.bridge));
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

    const startRegistry = step(opts.registry ? `Kubernetes: pushing the sandbox image to ${registry}` : 'Kubernetes: starting the image registry', async () => {
      if (!opts.registry) {
        const daemon = await startImageRegistry({ dir: path.join(dir, 'registry'), logDir, port: registryPort, say: out });
        later('etcd and registry', 'stopping the registry', () => daemon.stop());
      }
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

    const podLogsDir = path.join(dir, 'pod-logs');
    const kubeletRoot = path.join(dir, 'kubelet');
    const startKubelet = step('Kubernetes: starting the kubelet', async () => {
      await createCgroupRoot(cgroupRoot);
      later('mounts and cgroups', 'removing the pods\' cgroups', async () => {
        await removeCgroupRoot(cgroupRoot);
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
    later('mounts and cgroups', 'unmounting what the node left mounted', async () => {
      const count = await unmountUnder([dir]);
      if (count > 0) out(`Kubernetes cluster: unmounted ${count} mount(s) under its folder`);
    });

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

