import { chmod, mkdir, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import { RunFailure, type RunOutcome, type RunSpec } from '../../core/domain.js';
import { RegistryCredentials } from '../../core/registry-credentials.js';
import { startAgentRelay, type ClientTls } from './agent-relay.js';
import {
  DEPLOYMENT_LABEL,
  MANAGED_LABEL,
  RUN_LABEL,
  WORKDIR_LABEL,
  containerName,
  type ExecutionAdapter,
  type ExecutionContext,
} from './adapter.js';
import { ensureImage, statusCode } from './docker-images.js';
import { runOutcome, withLateStop, type RunAgents, type StopReason } from './outcome.js';
import { ARCHIVE_GRACE_SECONDS, PARAMETERS_FILE, RUNNER_PATH, SECRETS_FILE, runnerEnv } from './runner-contract.js';

const HEARTBEAT_MS = 2_000;
/** statfs types of memory file systems: secrets may only ever be written to one of these. */
const MEMORY_FS_TYPES = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
/** Where the runner finds its parameters file and the agent socket inside the container. */
const AGENT_DIR = '/var/run/glider-gun';
const SOCKET_NAME = 'agent.sock';
/** A unix socket's path is at most 107 bytes (sun_path); the relay makes it under a name 9 bytes longer first. */
const MAX_SOCKET_PATH = 107 - 9;
/** The runner's folder of a run, in the secrets folder: `<run id>.runner`. */
const RUNNER_DIR_SUFFIX = '.runner';

/**
 * Until the container has exited, or (with a deadline) a cancel or the deadline comes first. An abandoned
 * attempt throws: the container keeps running, and the attempt that resumes the run adopts it.
 */
async function wake(exited: Promise<unknown>, ctx: ExecutionContext, deadline?: number): Promise<'exited' | StopReason> {
  const listening = deadline !== undefined;
  let timer: NodeJS.Timeout | undefined;
  let onAbort = (): void => undefined;
  let onAbandon = (): void => undefined;
  try {
    const woke = await new Promise<'exited' | StopReason | 'abandoned'>((resolve, reject) => {
      onAbort = () => resolve('cancelled');
      onAbandon = () => resolve('abandoned');
      if (listening) {
        timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now()));
        if (ctx.signal.aborted) onAbort();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
      }
      if (ctx.abandon?.aborted) onAbandon();
      ctx.abandon?.addEventListener('abort', onAbandon, { once: true });
      exited.then(
        () => resolve('exited'),
        (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
      );
    });
    if (woke === 'abandoned') {
      throw new Error('stopped watching the run (its workflow ended, was reset, or this worker is stopping); the container is left running');
    }
    return woke;
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener('abort', onAbort);
    ctx.abandon?.removeEventListener('abort', onAbandon);
  }
}

/**
 * Runs a template as one Docker container on this node, wrapped by the runner (infra/images/pod-runner),
 * which restores /state, masks and stores the log, and archives /state in every outcome, as in a pod. This
 * adapter only launches, watches, stops and adopts; the runner reaches the agent API through a relay on a
 * unix socket in the run's folder, mounted into the container.
 */
export class DockerExecutor implements ExecutionAdapter {
  constructor(
    private readonly docker: Docker,
    private readonly workDir: string,
    /** On a memory file system: each run's secrets live here and reach the container as a bind mount. */
    private readonly secretsDir: string,
    /** The runner binary on this node's disk (installRunner), bind-mounted read-only into every run. */
    private readonly runnerBinary: string,
    /** Where the relay passes the runner's calls on to. */
    private readonly agentUrl: string,
    private readonly agents: RunAgents,
    /**
     * The run's agent credential: the same for every attempt (derived, never stored), so the relay of an
     * attempt that is being replaced and the relay of the one replacing it both hold a valid one.
     */
    private readonly credentialFor: (runId: string) => string,
    /** What images are pulled with, by registry. */
    private readonly registryCredentials = new RegistryCredentials(),
    /** For an https agentUrl (the node's gateway): the pinned CA and this node's client certificate, asked for at each call. */
    private readonly agentTls?: () => ClientTls,
  ) {}

  runDir(runId: string): string {
    return path.join(this.workDir, 'runs', runId);
  }

  secretsPath(runId: string): string {
    return path.join(this.secretsDir, runId);
  }

  async execute(spec: RunSpec, secrets: Record<string, unknown>, ctx: ExecutionContext): Promise<RunOutcome> {
    const name = containerName(spec.runId);
    let container = await this.find(name);
    if (!container) {
      // The run ended while no worker watched it and its container has since gone: the runner's report says how.
      if (await this.agents.result(spec.runId)) {
        ctx.log('the container is gone but its runner reported: the run ended unwatched', { container: name });
        return runOutcome(this.agents, spec, { exitCode: undefined, reason: undefined, message: undefined, oomKilled: false }, spec.cancelNow ? 'cancelled' : undefined);
      }
      if (await this.agents.started(spec.runId)) {
        throw ApplicationFailure.create({
          type: RunFailure.ContainerVanished,
          message: `container ${name} was started but no longer exists on this node`,
          nonRetryable: true,
        });
      }
      if (ctx.signal.aborted) return { status: 'cancelled', message: 'cancelled before the container started' };
      ctx.heartbeat({ phase: 'preparing' });
      const image = await ensureImage(this.docker, spec.image, this.registryCredentials, (message, fields) => {
        ctx.heartbeat({ phase: 'pulling' });
        if (fields) ctx.log(message, fields);
      });
      await this.prepare(spec, secrets);
      const entrypoint = image.Config.Entrypoint ?? [];
      container = await this.create(name, spec, typeof entrypoint === 'string' ? [entrypoint] : entrypoint);
      ctx.log('container created', { container: name, image: spec.image });
    } else {
      ctx.log('adopting existing container', { container: name });
    }
    const credential = this.credentialFor(spec.runId);
    await this.agents.grant({ runId: spec.runId, deploymentId: spec.deploymentId, restoreVersion: spec.restoreStateVersion, credential });
    const relay = await startAgentRelay({ socketPath: this.socketPath(spec.runId), agentUrl: this.agentUrl, runId: spec.runId, credential, tls: this.agentTls });
    try {
      let info = await container.inspect();
      if (info.State.Status === 'created') {
        await container.start().catch((err: unknown) => {
          if (statusCode(err) !== 304) throw err; // 304: a concurrent attempt started it
        });
        info = await container.inspect();
      }
      return await this.supervise(container, info, spec, ctx);
    } finally {
      await relay.close();
    }
  }

  /**
   * The runner's folder (its parameters file and the agent socket), beside the secrets on the memory file
   * system: the parameters stay off disk, and the socket's path stays short whatever the data folder is.
   */
  private runnerDir(runId: string): string {
    return path.join(this.secretsDir, `${runId}${RUNNER_DIR_SUFFIX}`);
  }

  private socketPath(runId: string): string {
    return path.join(this.runnerDir(runId), SOCKET_NAME);
  }

  private async supervise(container: Docker.Container, info: Docker.ContainerInspectInfo, spec: RunSpec, ctx: ExecutionContext): Promise<RunOutcome> {
    // The deadline counts from the container's own start, so an adopted container keeps its original deadline.
    const startedAt = Date.parse(info.State.StartedAt);
    const deadline = (Number.isNaN(startedAt) ? Date.now() : startedAt) + spec.timeoutSeconds * 1000;
    const exited = container.wait({ condition: 'not-running' }) as Promise<{ StatusCode: number }>;
    exited.catch(() => undefined); // awaited below; an engine gone meanwhile must not be unhandled
    let stopReason: StopReason | undefined = spec.cancelNow ? 'cancelled' : undefined;
    /** A cancel or the deadline that came once the template had ended and its runner was archiving: let it finish. */
    let lateStop: StopReason | undefined;
    let phase = 'executing';
    const heartbeat = setInterval(() => ctx.heartbeat({ phase, containerId: container.id }), HEARTBEAT_MS);
    try {
      ctx.heartbeat({ phase, containerId: container.id });
      if (!stopReason) {
        const woke = await wake(exited, ctx, deadline);
        if (woke !== 'exited') stopReason = woke;
      }
      if (stopReason && (await this.agents.archiving(spec.runId))) {
        // The template has ended; stopping the runner now would cut the archive short.
        lateStop = stopReason;
        stopReason = undefined;
      }
      if (stopReason) {
        ctx.log(`stopping container: ${stopReason}`, { graceSeconds: spec.stopGraceSeconds });
        phase = 'stopping';
        // The runner (PID 1) gets SIGTERM, passes it to the template's process group, SIGKILLs it after the
        // grace, then archives /state and reports before the engine's own, longer, wait runs out.
        await container.stop({ t: spec.stopGraceSeconds + ARCHIVE_GRACE_SECONDS }).catch((err: unknown) => {
          if (statusCode(err) !== 304) throw err; // 304: already stopped
        });
      }
      await wake(exited, ctx);
    } finally {
      clearInterval(heartbeat);
    }
    const final = await container.inspect();
    const outcome = await runOutcome(
      this.agents,
      spec,
      { exitCode: final.State.ExitCode, reason: final.State.OOMKilled ? 'OOMKilled' : final.State.Error || undefined, message: undefined, oomKilled: final.State.OOMKilled },
      stopReason,
    );
    return withLateStop(outcome, lateStop);
  }

  async cleanup(runId: string): Promise<void> {
    const container = await this.find(containerName(runId));
    if (container) {
      await container.remove({ force: true, v: true }).catch((err: unknown) => {
        if (statusCode(err) !== 404 && statusCode(err) !== 409) throw err; // gone, or removal already in progress
      });
    }
    await rm(this.runDir(runId), { recursive: true, force: true });
    await rm(this.secretsPath(runId), { recursive: true, force: true });
    await rm(this.runnerDir(runId), { recursive: true, force: true });
  }

  /**
   * What earlier workers of this node left behind for runs that have ended (a cleanup that failed, a worker
   * that died between recording an outcome and cleaning up): their containers (this node's, by the work-dir
   * label), run folders and secrets are removed. `activeRuns` tells which runs are still active; theirs are
   * kept for the attempt that adopts them. Answers the runs cleaned up.
   */
  async removeLeftovers(activeRuns: (runIds: readonly string[]) => Promise<ReadonlySet<string>>, log: (message: string) => void = () => undefined): Promise<string[]> {
    const containers = await this.docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL, `${WORKDIR_LABEL}=${this.workDir}`] } });
    const runIds = new Set(containers.map((c) => c.Labels[RUN_LABEL] ?? ''));
    for (const dir of [path.join(this.workDir, 'runs'), this.secretsDir]) {
      for (const name of await readdir(dir).catch(() => [])) runIds.add(name.endsWith(RUNNER_DIR_SUFFIX) ? name.slice(0, -RUNNER_DIR_SUFFIX.length) : name);
    }
    const candidates = [...runIds].filter((id) => /^run-[a-z0-9]+$/.test(id));
    if (candidates.length === 0) return [];
    const active = await activeRuns(candidates);
    const removed: string[] = [];
    for (const runId of candidates.filter((id) => !active.has(id))) {
      await this.settleEnded(runId, log);
      await this.cleanup(runId);
      removed.push(runId);
    }
    return removed;
  }

  /**
   * A container still running for a run that has ended (this node was away past the run's end): its template
   * may have changed real things, so its /state is not dropped. Its runner is stopped as a cancel would stop
   * it, with a relay to reach the agent API, and archives /state; the API keeps that, set apart, as a
   * quarantined version for an operator to promote.
   */
  private async settleEnded(runId: string, log: (message: string) => void): Promise<void> {
    const container = await this.find(containerName(runId));
    const info = await container?.inspect().catch(() => undefined);
    // Only a run's own container has a runner to archive /state (anything else carrying the labels is removed).
    if (!container || !info?.State.Running || info.Config.Entrypoint?.[0] !== RUNNER_PATH) return;
    const grace = Number(/^GG_STOP_GRACE_SECONDS=(\d+)$/m.exec((info.Config.Env ?? []).join('\n'))?.[1] ?? 10);
    log(`run ${runId} ended while this node was away, but its container still runs: stopping it so its runner archives /state (kept as a quarantined state version)`);
    await mkdir(this.runnerDir(runId), { recursive: true });
    const relay = await startAgentRelay({ socketPath: this.socketPath(runId), agentUrl: this.agentUrl, runId, credential: this.credentialFor(runId), tls: this.agentTls });
    try {
      await container.stop({ t: grace + ARCHIVE_GRACE_SECONDS }).catch((err: unknown) => {
        if (statusCode(err) !== 304) throw err; // 304: already stopped
      });
    } finally {
      await relay.close();
    }
  }

  /**
   * The run's folders, made afresh (the runner empties /state and /logs itself): the runner's folder with the
   * parameters file (and, later, the agent socket), and the secrets file, only ever on a memory file system.
   */
  private async prepare(spec: RunSpec, secrets: Record<string, unknown>): Promise<void> {
    const dir = this.runDir(spec.runId);
    if (Buffer.byteLength(this.socketPath(spec.runId)) > MAX_SOCKET_PATH) {
      throw ApplicationFailure.create({
        type: RunFailure.Infrastructure,
        message: `the run's agent socket ${this.socketPath(spec.runId)} is longer than a unix socket path may be (${MAX_SOCKET_PATH} bytes): choose a shorter GLIDERGUN_SECRETS_DIR`,
        nonRetryable: true,
      });
    }
    await rm(dir, { recursive: true, force: true });
    for (const sub of ['state', 'logs', ...(spec.templateFiles ? ['template'] : [])]) await mkdir(path.join(dir, sub), { recursive: true });

    // The parent is private to root on the host; the run's own folders are what the container sees.
    await mkdir(this.secretsDir, { recursive: true, mode: 0o700 });
    const fsType = (await statfs(this.secretsDir)).type;
    if (!MEMORY_FS_TYPES.has(fsType)) {
      throw ApplicationFailure.create({
        type: RunFailure.Infrastructure,
        message: `${this.secretsDir} is not a memory file system (tmpfs); refusing to write secrets there (set GLIDERGUN_SECRETS_DIR)`,
        nonRetryable: true,
      });
    }
    const runnerDir = this.runnerDir(spec.runId);
    await rm(runnerDir, { recursive: true, force: true });
    await mkdir(runnerDir, { mode: 0o755 });
    await chmod(runnerDir, 0o755);
    await writeFile(path.join(runnerDir, PARAMETERS_FILE), `${JSON.stringify(spec.parameters, null, 2)}\n`, { mode: 0o444 });
    const secretsDir = this.secretsPath(spec.runId);
    await rm(secretsDir, { recursive: true, force: true });
    await mkdir(secretsDir, { mode: 0o755 });
    await chmod(secretsDir, 0o755);
    await writeFile(path.join(secretsDir, SECRETS_FILE), `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o444 });
  }

  private async find(name: string): Promise<Docker.Container | undefined> {
    const container = this.docker.getContainer(name);
    try {
      await container.inspect();
      return container;
    } catch (err) {
      if (statusCode(err) === 404) return undefined;
      throw err;
    }
  }

  private async create(name: string, spec: RunSpec, entrypoint: string[]): Promise<Docker.Container> {
    const dir = this.runDir(spec.runId);
    try {
      return await this.docker.createContainer({
        name,
        Image: spec.image,
        Entrypoint: [RUNNER_PATH, 'run', '--', ...entrypoint, spec.action],
        Cmd: [],
        Env: [
          ...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
          ...Object.entries(runnerEnv(spec, `unix://${AGENT_DIR}/${SOCKET_NAME}`)).map(([k, v]) => `${k}=${v}`),
        ],
        Labels: { [MANAGED_LABEL]: 'true', [RUN_LABEL]: spec.runId, [DEPLOYMENT_LABEL]: spec.deploymentId, [WORKDIR_LABEL]: this.workDir },
        HostConfig: {
          ...(spec.cpus ? { NanoCpus: Math.round(spec.cpus * 1e9) } : {}),
          // No swap on top of the memory limit: the limit is what the template gets.
          ...(spec.memoryMb ? { Memory: spec.memoryMb * 1024 * 1024, MemorySwap: spec.memoryMb * 1024 * 1024 } : {}),
          Binds: [
            `${path.join(dir, 'state')}:/state`,
            `${path.join(dir, 'logs')}:/logs`,
            `${this.secretsPath(spec.runId)}:/secrets:ro`,
            `${this.runnerDir(spec.runId)}:${AGENT_DIR}:ro`,
            `${this.runnerBinary}:${RUNNER_PATH}:ro`,
            ...(spec.templateFiles ? [`${path.join(dir, 'template')}:/template`] : []),
          ],
        },
      });
    } catch (err) {
      // A concurrent attempt created it first: adopt that one instead of making a twin.
      if (statusCode(err) === 409) return this.docker.getContainer(name);
      throw err;
    }
  }
}
