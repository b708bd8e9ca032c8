import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import type { RunOutcome, RunSpec } from '../../core/domain.js';
import { LogFileTailer } from './log-files.js';
import { DockerLogDemuxer, LogCollector, type LogSink } from './logs.js';
import { secretStrings } from './masking.js';
import { readOutputs } from './outputs.js';
import { isDamagedArchive, packState, unpackState } from './state-archive.js';
import {
  DEPLOYMENT_LABEL,
  ExecutionFailure,
  MANAGED_LABEL,
  RUN_LABEL,
  WORKDIR_LABEL,
  containerName,
  type ExecutionAdapter,
  type ExecutionContext,
  type StateStore,
  type TemplateFileStore,
} from './adapter.js';
import { imageRegistryHost, RegistryCredentials } from '../../core/registry-credentials.js';

const HEARTBEAT_MS = 2_000;
/**
 * Restore and archive heartbeat while bytes move, however slowly; a store that moves nothing for this long
 * stops the heartbeats, so the attempt times out and a retry (fenced: core/db/state.ts) takes over.
 */
const STORAGE_STALL_MS = 120_000;
/** How long the log may take to drain after the container has exited. */
const LOG_DRAIN_MS = 30_000;
const LOG_FILES_POLL_MS = 1_000;
/** statfs types of memory file systems: secrets may only ever be written to one of these. */
const MEMORY_FS_TYPES = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
export const SECRETS_FILE = 'template-secrets.json';

function statusCode(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null && 'statusCode' in err && typeof err.statusCode === 'number'
    ? err.statusCode
    : undefined;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** The restored archive's bytes, counted for the heartbeats; stops at a cancel. */
async function* counted(source: AsyncIterable<Buffer>, progress: (bytes: number) => void, signal: AbortSignal): AsyncGenerator<Buffer> {
  let bytes = 0;
  for await (const piece of source) {
    if (signal.aborted) throw new Error('cancelled while restoring');
    bytes += piece.length;
    progress(bytes);
    yield piece;
  }
}

/**
 * Runs a storage step (restore or archive) with heartbeats every few seconds for as long as it makes
 * progress: a slow store costs time, never a heartbeat timeout, and the heartbeats carry a cancel to it.
 */
async function whileStoring<T>(ctx: ExecutionContext, phase: 'restoring' | 'archiving', work: (progress: (bytes: number) => void) => Promise<T>): Promise<T> {
  let bytes = 0;
  let movedAt = Date.now();
  const beat = () => {
    if (Date.now() - movedAt < STORAGE_STALL_MS) ctx.heartbeat({ phase, bytes });
  };
  beat();
  const timer = setInterval(beat, HEARTBEAT_MS);
  try {
    return await work((n) => {
      bytes = n;
      movedAt = Date.now();
    });
  } finally {
    clearInterval(timer);
  }
}

/**
 * Runs a template as one Docker container on this node. The run's directory on the host holds the
 * bind-mounted /state and /logs and a `started` marker written after the container is created and before it
 * starts, so a retried activity can tell "not started yet" from "started, then lost".
 */
export class DockerExecutor implements ExecutionAdapter {
  constructor(
    private readonly docker: Docker,
    private readonly workDir: string,
    /** On a memory file system: each run's secrets live here and reach the container as a bind mount. */
    private readonly secretsDir: string,
    private readonly logSink: LogSink,
    private readonly stateStore: StateStore,
    /** For ad-hoc templates, whose files are mounted at /template. */
    private readonly templateFiles?: TemplateFileStore,
    /** What images are pulled with, by registry. */
    private readonly registryCredentials = new RegistryCredentials(),
  ) {}

  runDir(runId: string): string {
    return path.join(this.workDir, 'runs', runId);
  }

  secretsPath(runId: string): string {
    return path.join(this.secretsDir, runId);
  }

  async execute(spec: RunSpec, secrets: Record<string, unknown>, ctx: ExecutionContext): Promise<RunOutcome> {
    const name = containerName(spec.runId);
    const dir = this.runDir(spec.runId);
    const marker = path.join(dir, 'started');
    let container = await this.find(name);
    if (!container) {
      if (await exists(marker)) {
        throw ApplicationFailure.create({
          type: ExecutionFailure.ContainerVanished,
          message: `container ${name} was started but no longer exists on this node`,
          nonRetryable: true,
        });
      }
      if (!(await this.prepare(dir, spec, ctx))) {
        // Cancelled while restoring: the template never started and the previous version stays current.
        return { status: 'cancelled', message: 'cancelled while /state was being restored; the template was not started' };
      }
      if (ctx.signal.aborted) {
        // Cancelled after restoring: the template never starts, and /state (as restored) is still archived.
        const archived = await this.archive(spec, ctx, () => undefined);
        return { status: 'cancelled', message: 'cancelled before the container started', stateVersion: archived.version };
      }
      await this.writeSecrets(spec.runId, secrets);
      await this.ensureImage(spec.image, ctx);
      container = await this.create(name, dir, spec);
      ctx.log('container created', { container: name, image: spec.image });
    } else {
      ctx.log('adopting existing container', { container: name });
    }
    await mkdir(dir, { recursive: true });
    await writeFile(marker, `${container.id}\n`);

    let info = await container.inspect();
    let logs: Awaited<ReturnType<DockerExecutor['followLogs']>>;
    if (info.State.Status === 'created') {
      // Attached before it starts, we get every byte exactly as written. (The engine's log drivers alter
      // some: json-file turns bytes that are not UTF-8 into U+FFFD, `local` drops the newline after a line
      // longer than 16 KiB.)
      logs = await this.followLogs(container, spec, secretStrings(secrets), 'attach');
      await container.start();
      info = await container.inspect();
    } else {
      // Adopted after a retry: the engine's log (json-file) still holds everything; what is stored is skipped.
      logs = await this.followLogs(container, spec, secretStrings(secrets), 'log-driver');
    }
    let outcome: RunOutcome;
    try {
      outcome = await this.supervise(container, info, spec, ctx);
    } catch (err) {
      logs.stop();
      throw err;
    }
    await logs.finished(LOG_DRAIN_MS);
    // Whatever the outcome (success, failure, timeout, cancel), /state becomes the deployment's next version.
    const warnings = [...(outcome.warnings ?? [])];
    const cancelledBefore = ctx.signal.aborted;
    const archived = await this.archive(spec, ctx, (w) => warnings.push(w));
    if (ctx.signal.aborted && !cancelledBefore) {
      // The template had ended: there was nothing left to stop, and the archive was not cut short.
      warnings.push('a cancel arrived while /state was being archived, after the template had ended; the archive was completed');
    }
    return { ...outcome, warnings, stateVersion: archived.version };
  }

  /** /state archived as the next version, heartbeating while it is stored. A cancel does not cut it short. */
  private archive(spec: RunSpec, ctx: ExecutionContext, warn: (message: string) => void) {
    const archive = packState(path.join(this.runDir(spec.runId), 'state'), warn);
    return whileStoring(ctx, 'archiving', (progress) => this.stateStore.write(spec.deploymentId, spec.runId, archive, progress));
  }

  private async followLogs(container: Docker.Container, spec: RunSpec, secrets: string[], source: 'attach' | 'log-driver') {
    const runId = spec.runId;
    const collector = new LogCollector(runId, this.logSink, secrets, await this.logSink.storedLengths(runId), spec.logMaxBytes);
    const demux = new DockerLogDemuxer((stream, at, data) => collector.entry(stream, at, data), source === 'log-driver');
    const stream = (
      source === 'attach'
        ? await container.attach({ stream: true, stdout: true, stderr: true, logs: false })
        : await container.logs({ follow: true, stdout: true, stderr: true, timestamps: true })
    ) as unknown as NodeJS.ReadableStream & { destroy(): void };
    // Files the template writes in /logs are stored as they grow, beside stdout and stderr.
    const files = new LogFileTailer(path.join(this.runDir(runId), 'logs'), (name, data) => collector.entry(name, new Date(), data));
    const tailing = setInterval(() => void files.poll(), LOG_FILES_POLL_MS);
    // The engine's errors reach the loop below through its iterator; this keeps one that comes after the loop
    // has ended (a socket reset while it is being closed) from being thrown out of the process.
    stream.on('error', () => undefined);
    const done = (async () => {
      try {
        for await (const piece of stream) demux.push(piece as Buffer);
        clearInterval(tailing);
        await files.poll(); // what the files hold at the end
        await collector.end();
      } finally {
        // A stream that failed (the container removed under it, the engine gone) leaves no timer running.
        clearInterval(tailing);
        collector.abandon();
      }
    })();
    done.catch(() => undefined); // observed by finished(); never an unhandled rejection
    return {
      stop: () => {
        clearInterval(tailing);
        stream.destroy();
        collector.abandon();
      },
      /** Resolves once the engine has delivered the last line and it is stored; fails the run's activity otherwise. */
      finished: async (timeoutMs: number) => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            done,
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error(`the container's log did not end within ${timeoutMs} ms`)), timeoutMs);
            }),
          ]);
        } finally {
          clearTimeout(timer);
          stream.destroy();
        }
      },
    };
  }

  private async supervise(
    container: Docker.Container,
    info: Docker.ContainerInspectInfo,
    spec: RunSpec,
    ctx: ExecutionContext,
  ): Promise<RunOutcome> {
    // The deadline counts from the container's own start, so an adopted container keeps its original deadline.
    const startedAt = Date.parse(info.State.StartedAt);
    const deadline = (Number.isNaN(startedAt) ? Date.now() : startedAt) + spec.timeoutSeconds * 1000;
    const exited = container.wait({ condition: 'not-running' }) as Promise<{ StatusCode: number }>;
    let stopReason: 'cancelled' | 'timeout' | 'abandoned' | undefined;
    const heartbeat = setInterval(() => ctx.heartbeat({ phase: 'executing', containerId: container.id }), HEARTBEAT_MS);
    try {
      ctx.heartbeat({ phase: 'executing', containerId: container.id });
      stopReason = await new Promise<'cancelled' | 'timeout' | 'abandoned' | undefined>((resolve, reject) => {
        const timer = setTimeout(() => resolve('timeout'), Math.max(0, deadline - Date.now()));
        const onAbort = () => resolve('cancelled');
        const onAbandon = () => resolve('abandoned');
        if (ctx.signal.aborted) onAbort();
        ctx.signal.addEventListener('abort', onAbort, { once: true });
        if (ctx.abandon?.aborted) onAbandon();
        ctx.abandon?.addEventListener('abort', onAbandon, { once: true });
        exited
          .then(
            () => resolve(undefined),
            (err: unknown) => reject(err instanceof Error ? err : new Error(String(err))),
          )
          .finally(() => {
            clearTimeout(timer);
            ctx.signal.removeEventListener('abort', onAbort);
            ctx.abandon?.removeEventListener('abort', onAbandon);
          });
      });
      if (stopReason === 'abandoned') {
        // The container keeps running; the attempt that resumes the run adopts it.
        throw new Error('stopped watching the run (its workflow ended, was reset, or this worker is stopping); the container is left running');
      }
      if (stopReason) {
        ctx.log(`stopping container: ${stopReason}`, { graceSeconds: spec.stopGraceSeconds });
        // SIGTERM reaches the whole process group through tini (TINI_KILL_PROCESS_GROUP), SIGKILL after the grace.
        await container.stop({ t: spec.stopGraceSeconds }).catch((err: unknown) => {
          if (statusCode(err) !== 304) throw err; // 304: already stopped
        });
        await exited;
      }
    } finally {
      clearInterval(heartbeat);
    }
    const final = await container.inspect();
    const exitCode = final.State.ExitCode;
    const { outputs, warnings } = await readOutputs(path.join(this.runDir(spec.runId), 'state'));
    const extras = { exitCode, warnings, ...(outputs ? { outputs } : {}) };
    if (stopReason === 'cancelled') return { status: 'cancelled', message: 'cancelled on request', ...extras };
    if (stopReason === 'timeout') {
      return { status: 'failed', reason: 'timeout', message: `exceeded the run timeout of ${spec.timeoutSeconds}s`, ...extras };
    }
    if (exitCode === 0) return { status: 'succeeded', ...extras };
    const oom = final.State.OOMKilled ? ' (killed: out of memory)' : '';
    return { status: 'failed', reason: 'exit-code', message: `template exited with code ${exitCode}${oom}`, ...extras };
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
  }

  /**
   * What earlier workers of this node left behind for runs that have ended (a cleanup that failed, a worker
   * that died between recording an outcome and cleaning up): their containers (this node's, by the work-dir
   * label), run folders and secrets are removed. `activeRuns` tells which runs are still active; theirs are
   * kept for the attempt that adopts them. Answers the runs cleaned up.
   */
  async removeLeftovers(activeRuns: (runIds: readonly string[]) => Promise<ReadonlySet<string>>): Promise<string[]> {
    const containers = await this.docker.listContainers({ all: true, filters: { label: [MANAGED_LABEL, `${WORKDIR_LABEL}=${this.workDir}`] } });
    const runIds = new Set(containers.map((c) => c.Labels[RUN_LABEL] ?? ''));
    for (const dir of [path.join(this.workDir, 'runs'), this.secretsDir]) {
      for (const name of await readdir(dir).catch(() => [])) runIds.add(name);
    }
    const candidates = [...runIds].filter((id) => /^run-[a-z0-9]+$/.test(id));
    if (candidates.length === 0) return [];
    const active = await activeRuns(candidates);
    const removed: string[] = [];
    for (const runId of candidates.filter((id) => !active.has(id))) {
      await this.cleanup(runId);
      removed.push(runId);
    }
    return removed;
  }

  /** Only ever on a memory file system, readable through the mount by whatever user the template runs as. */
  private async writeSecrets(runId: string, secrets: Record<string, unknown>): Promise<void> {
    // The parent is private to root on the host; the run's own folder is what the container sees.
    await mkdir(this.secretsDir, { recursive: true, mode: 0o700 });
    const fsType = (await statfs(this.secretsDir)).type;
    if (!MEMORY_FS_TYPES.has(fsType)) {
      throw ApplicationFailure.create({
        type: 'infrastructure',
        message: `${this.secretsDir} is not a memory file system (tmpfs); refusing to write secrets there (set GLIDERGUN_SECRETS_DIR)`,
        nonRetryable: true,
      });
    }
    const dir = this.secretsPath(runId);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { mode: 0o755 });
    await chmod(dir, 0o755);
    await writeFile(path.join(dir, SECRETS_FILE), `${JSON.stringify(secrets, null, 2)}\n`, { mode: 0o444 });
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

  /**
   * Lays out /state (restored from the previous version) and /logs afresh; only before the container exists.
   * False when a cancel arrived while restoring: the restore stops there and nothing is archived.
   */
  private async prepare(dir: string, spec: RunSpec, ctx: ExecutionContext): Promise<boolean> {
    await rm(dir, { recursive: true, force: true });
    const stateDir = path.join(dir, 'state');
    await mkdir(stateDir, { recursive: true });
    await mkdir(path.join(dir, 'logs'), { recursive: true });
    if (spec.restoreStateVersion !== undefined) {
      const version = spec.restoreStateVersion;
      const cancelled = await whileStoring(ctx, 'restoring', async (progress) => {
        try {
          await unpackState(stateDir, counted(this.stateStore.read(spec.deploymentId, version, spec.runId), progress, ctx.signal));
          return false;
        } catch (err) {
          // However the stopped restore surfaces (our own error, or the unpacker's on a cut stream).
          if (ctx.signal.aborted) return true;
          if (isDamagedArchive(err)) {
            throw ApplicationFailure.create({
              type: 'state-corrupt',
              message: `state version ${version} of ${spec.deploymentId} cannot be unpacked (${err instanceof Error ? err.message : String(err)}); roll back to an earlier version`,
              nonRetryable: true,
            });
          }
          throw err;
        }
      });
      if (cancelled) return false;
    }
    if (spec.templateFiles) await this.unpackTemplateFiles(path.join(dir, 'template'), spec.templateFiles);
    // The restored file may be anything the template left (even a link to a host file): replace, never follow.
    const paramsFile = path.join(stateDir, 'template-parameters.json');
    await rm(paramsFile, { recursive: true, force: true });
    const handle = await open(paramsFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
    try {
      await handle.writeFile(`${JSON.stringify(spec.parameters, null, 2)}\n`);
    } finally {
      await handle.close();
    }
    return true;
  }

  /** An ad-hoc template's files, checked against the digest the run was given, then read-only for the container. */
  private async unpackTemplateFiles(target: string, files: NonNullable<RunSpec['templateFiles']>): Promise<void> {
    if (!this.templateFiles) {
      throw ApplicationFailure.create({ type: 'infrastructure', message: 'this node cannot fetch ad-hoc template files', nonRetryable: true });
    }
    const archive = await this.templateFiles.read(files.sourceId);
    if (createHash('sha256').update(archive).digest('hex') !== files.sha256) {
      throw ApplicationFailure.create({ type: 'infrastructure', message: `template files ${files.sourceId} do not match their digest`, nonRetryable: true });
    }
    await mkdir(target, { recursive: true });
    await unpackState(target, Readable.from([archive]));
  }

  private async ensureImage(image: string, ctx: ExecutionContext): Promise<void> {
    try {
      await this.docker.getImage(image).inspect();
      return;
    } catch (err) {
      if (statusCode(err) !== 404) throw err;
    }
    const auth = this.registryCredentials.for(imageRegistryHost(image));
    ctx.log('pulling image', { image, ...(auth ? { as: auth.username } : {}) });
    try {
      const stream = await this.docker.pull(image, auth ? { authconfig: auth } : {});
      await new Promise<void>((resolve, reject) => {
        this.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve()), () =>
          ctx.heartbeat({ phase: 'pulling' }),
        );
      });
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      // A registry with a token service gives anonymous (or pull-less) clients a token that grants nothing: the
      // engine then says "pull access denied … may require 'docker login'".
      const hint = /unauthorized|authentication required|no basic auth credentials|\b401\b|pull access denied|requested access to the resource is denied/i.test(why)
        ? auth
          ? ` (the registry refuses the credentials of ${auth.username})`
          : ' (the registry wants credentials and none are configured for it: see GLIDERGUN_REGISTRY_AUTH_FILE)'
        : '';
      throw ApplicationFailure.create({
        type: ExecutionFailure.ImageUnavailable,
        message: `image ${image} is not on this node and could not be pulled${hint}: ${why}`,
        nonRetryable: true,
      });
    }
  }

  private async create(name: string, dir: string, spec: RunSpec): Promise<Docker.Container> {
    try {
      return await this.docker.createContainer({
        name,
        Image: spec.image,
        Cmd: [spec.action],
        Env: [...Object.entries(spec.env).map(([k, v]) => `${k}=${v}`), 'TINI_KILL_PROCESS_GROUP=1'],
        Labels: { [MANAGED_LABEL]: 'true', [RUN_LABEL]: spec.runId, [DEPLOYMENT_LABEL]: spec.deploymentId, [WORKDIR_LABEL]: this.workDir },
        HostConfig: {
          Init: true,
          ...(spec.cpus ? { NanoCpus: Math.round(spec.cpus * 1e9) } : {}),
          // No swap on top of the memory limit: the limit is what the template gets.
          ...(spec.memoryMb ? { Memory: spec.memoryMb * 1024 * 1024, MemorySwap: spec.memoryMb * 1024 * 1024 } : {}),
          Binds: [
            `${path.join(dir, 'state')}:/state`,
            `${path.join(dir, 'logs')}:/logs`,
            `${this.secretsPath(spec.runId)}:/secrets:ro`,
            ...(spec.templateFiles ? [`${path.join(dir, 'template')}:/template:ro`] : []),
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
