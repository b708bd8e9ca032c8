import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type Docker from 'dockerode';
import { appendBuildLog, endBuild, getBuild, markBuildRunning, setBuildSource } from '../../core/db/builds.js';
import type { Db } from '../../core/db/pool.js';
import { readSourceArchive, storeSource, getSource } from '../../core/db/template-sources.js';
import { getTemplateTypeVersion } from '../../core/db/template-types.js';
import { insertTemplateVersion, type TemplateSourceInfo } from '../../core/db/templates.js';
import { inTransaction } from '../../core/db/pool.js';
import { BuildFailure, type BuildFailureReason } from '../../core/domain.js';
import { planParameters } from '../../core/parameter-plan.js';
import { SourceRejectedError } from '../../core/template-sources/index.js';
import { generateDockerfile } from './dockerfile.js';
import { fetchGitSource } from './git-source.js';
import { buildAndPushImage } from './image-build.js';
import { registryHostOf, type RegistryCredentials } from '../../core/registry-credentials.js';

/** What a finished image build hands to the database side. */
export interface BuiltImage {
  /** `<repository>@sha256:…` */
  image: string;
  source: TemplateSourceInfo;
}

const LOG_FLUSH_MS = 250;

/** Build lines go to Postgres in batches as they come, so `GET /v1/builds/{id}/logs` shows a live log. */
class BuildLog {
  private lines: string[] = [];
  private chain: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly db: Db,
    private readonly buildId: string,
  ) {
    this.timer = setInterval(() => this.flush(), LOG_FLUSH_MS);
  }

  line(text: string): void {
    for (const l of text.replace(/\r/g, '').split('\n')) if (l.trim() !== '') this.lines.push(l.slice(0, 8192));
  }

  private flush(): void {
    const batch = this.lines;
    if (batch.length === 0) return;
    this.lines = [];
    this.chain = this.chain.then(() => appendBuildLog(this.db, this.buildId, batch)).catch(() => undefined);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.flush();
    await this.chain;
  }
}

function failure(type: BuildFailureReason, message: string): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true });
}

/** The build's database steps, on the cluster worker. */
export function createBuildActivities(deps: { db: Db }) {
  const { db } = deps;
  return {
    /** False when the build already ended (cancelled before it started). */
    async startBuild(buildId: string): Promise<boolean> {
      const build = await markBuildRunning(db, buildId);
      return build?.status === 'running';
    },

    /** The new template version and the build's end, in one transaction: never one without the other. */
    async completeBuild(buildId: string, built: BuiltImage): Promise<number> {
      return inTransaction(db, async (tx) => {
        const build = await getBuild(tx, buildId);
        if (!build) throw failure(BuildFailure.Infrastructure, `build ${buildId} does not exist`);
        if (build.status === 'succeeded') return build.version;
        const type = await getTemplateTypeVersion(tx, build.type.name, build.type.version);
        if (!type) throw failure(BuildFailure.Infrastructure, `template type ${build.type.name}@${build.type.version} is gone`);
        const plan = planParameters(type.parameters, build.parameters);
        if (!plan.ok) throw failure(BuildFailure.SourceRejected, `the parameter plan no longer fits the type: ${plan.problems.map((p) => `${p.parameter} ${p.problem}`).join('; ')}`);
        const version = await insertTemplateVersion(tx, {
          templateName: build.templateName,
          image: built.image,
          parameters: plan.parameters,
          actions: type.actions,
          tfVars: type.tfVars,
          limits: {},
          createdBy: build.requestedBy,
          version: build.version,
          origin: { type: build.type, source: built.source, buildId, adhoc: false, fixedParameters: plan.fixed },
        });
        await endBuild(tx, buildId, { status: 'succeeded', image: built.image });
        await appendBuildLog(tx, buildId, [`template ${build.templateName} version ${version.version}: ${built.image}`]);
        return version.version;
      });
    },

    async failBuild(buildId: string, end: { status: 'failed' | 'cancelled'; reason?: string; message: string }): Promise<void> {
      await endBuild(db, buildId, end);
      await appendBuildLog(db, buildId, [`build ${end.status}: ${end.message}`]);
    },
  };
}

export type BuildActivities = ReturnType<typeof createBuildActivities>;

/** The image build itself, on a worker with a Docker engine and access to the registry. */
export function createBuilderActivities(deps: {
  db: Db;
  docker: Docker;
  /** Where template images go: `<host[:port]>/<path>`; each build pushes `<registry>/<template>:<build id>`. */
  registry: string;
  /** What the push goes with (the registry's own entry) and base images are pulled with, by registry. */
  registryCredentials?: RegistryCredentials | undefined;
  /** Registries spoken to over plain HTTP (loopback ones always are). */
  insecureRegistries?: readonly string[] | undefined;
  allowFileGitUrls: boolean;
}) {
  const { db } = deps;
  return {
    async buildTemplateImage(buildId: string, timeoutSeconds: number): Promise<BuiltImage> {
      const ctx = Context.current();
      const build = await getBuild(db, buildId);
      if (!build) throw failure(BuildFailure.Infrastructure, `build ${buildId} does not exist`);
      const type = await getTemplateTypeVersion(db, build.type.name, build.type.version);
      if (!type) throw failure(BuildFailure.Infrastructure, `template type ${build.type.name}@${build.type.version} does not exist`);
      const log = new BuildLog(db, buildId);
      // A cancel reaches the activity only in a heartbeat's answer: beat often.
      const beat = setInterval(() => ctx.heartbeat(), 1_000);
      try {
        let archive: Buffer;
        let source: TemplateSourceInfo;
        if (build.source.kind === 'upload') {
          const stored = await getSource(db, build.source.sourceId);
          const bytes = await readSourceArchive(db, build.source.sourceId);
          if (!stored || !bytes) throw failure(BuildFailure.SourceRejected, `source ${build.source.sourceId} does not exist`);
          archive = bytes;
          source = { kind: 'upload', sourceId: stored.id, format: stored.format === 'zip' ? 'zip' : 'tgz', sha256: stored.sha256 };
          log.line(`source ${stored.id}: ${stored.files} files, ${stored.bytes} bytes, sha256 ${stored.sha256}`);
        } else {
          const { url, ref, subdir } = build.source;
          log.line(`fetching ${url} at ${ref}${subdir ? `, folder ${subdir}` : ''}`);
          const workDir = await mkdtemp(path.join(os.tmpdir(), 'gg-git-'));
          try {
            const fetched = await fetchGitSource(
              { url, ref, ...(subdir ? { subdir } : {}) },
              { workDir, allowFileUrls: deps.allowFileGitUrls, signal: ctx.cancellationSignal, onProgress: (l) => log.line(l) },
            );
            const stored = await storeSource(db, { format: 'git', archive: fetched.archive, sha256: fetched.sha256, files: fetched.files, bytes: fetched.bytes, createdBy: build.requestedBy });
            await setBuildSource(db, buildId, stored.id);
            archive = fetched.archive;
            source = { kind: 'git', sourceId: stored.id, url, ref, ...(subdir ? { subdir } : {}), commit: fetched.commit, sha256: fetched.sha256 };
            log.line(`commit ${fetched.commit}: ${fetched.files} files, ${fetched.bytes} bytes, sha256 ${fetched.sha256}`);
          } catch (err) {
            if (err instanceof SourceRejectedError) throw failure(BuildFailure.SourceRejected, `${err.message} (${err.code})`);
            throw err;
          } finally {
            await rm(workDir, { recursive: true, force: true });
          }
        }
        const dockerfile = generateDockerfile({
          baseImage: type.image,
          templateName: build.templateName,
          version: build.version,
          sourceDigest: source.sha256,
          typeName: type.typeName,
          typeVersion: type.version,
        });
        log.line(`building FROM ${type.image}`);
        try {
          const pushed = await buildAndPushImage(
            deps.docker,
            {
              dockerfile,
              source: archive,
              tag: `${deps.registry}/${build.templateName}:${buildId}`,
              registryAuth: deps.registryCredentials?.for(registryHostOf(deps.registry)),
              pullCredentials: deps.registryCredentials,
            },
            { signal: ctx.cancellationSignal, onLog: (l) => log.line(l), timeoutMs: timeoutSeconds * 1000, insecureRegistries: deps.insecureRegistries },
          );
          return { image: pushed.reference, source };
        } catch (err) {
          const code = (err as { code?: string }).code;
          if (code === 'BUILD_FAILED') throw failure(BuildFailure.BuildFailed, (err as Error).message);
          if (code === 'PUSH_FAILED') throw failure(BuildFailure.PushFailed, (err as Error).message);
          if (code === 'BUILD_TIMEOUT') throw failure(BuildFailure.Timeout, `the build took longer than ${timeoutSeconds}s`);
          throw err;
        }
      } finally {
        clearInterval(beat);
        await log.close();
      }
    },
  };
}

export type BuilderActivities = ReturnType<typeof createBuilderActivities>;
