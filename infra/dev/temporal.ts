import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from '../../workflows/messages.js';
import { buildOnce, cacheDir } from './cache.js';
import { diesWithParent } from './processes.js';
import { say as defaultSay, step, waitFor, type Say } from './progress.js';

/** Later tags carry a `replace` directive that `go install` refuses (DESIGN.md, section 6). */
export const TEMPORAL_CLI_VERSION = '1.5.1';

async function isExecutable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** The Temporal CLI if it is already there (TEMPORAL_CLI_PATH, or built into the cache); never builds it. */
export async function temporalCliIfPresent(): Promise<string | undefined> {
  const binary = process.env.TEMPORAL_CLI_PATH ?? path.join(cacheDir('temporal', TEMPORAL_CLI_VERSION), 'temporal');
  return (await isExecutable(binary)) ? path.resolve(binary) : undefined;
}

/**
 * The Temporal CLI (which embeds the dev server and Web UI), built from the Go module proxy on first use
 * and cached by version. TEMPORAL_CLI_PATH points at an existing binary instead.
 */
export async function ensureTemporalCli(out: Say = defaultSay): Promise<string> {
  if (process.env.TEMPORAL_CLI_PATH) return process.env.TEMPORAL_CLI_PATH;
  const dir = cacheDir('temporal', TEMPORAL_CLI_VERSION);
  const binary = path.join(dir, 'temporal');
  if (await isExecutable(binary)) return binary;
  const built = await buildOnce(`${dir}.lock`, () => buildTemporalCli(dir, out), (pid) =>
    out(`waiting for the Temporal CLI build that process ${pid} is running`),
  );
  if (built) return built;
  return ensureTemporalCli(out);
}

async function buildTemporalCli(dir: string, out: Say): Promise<string> {
  const binary = path.join(dir, 'temporal');
  // Build into a scratch folder and rename, so an interrupted build never leaves a half-written binary.
  const scratch = `${dir}.partial-${process.pid}`;
  await rm(scratch, { recursive: true, force: true });
  await mkdir(scratch, { recursive: true });
  await step(`building the Temporal CLI ${TEMPORAL_CLI_VERSION} from the Go module proxy (first time only, a few minutes)`, async () => {
    let downloads = 0;
    await new Promise<void>((resolve, reject) => {
      const child = spawn('go', ['install', `github.com/temporalio/cli/cmd/temporal@v${TEMPORAL_CLI_VERSION}`], {
        env: { ...process.env, GOBIN: scratch, CGO_ENABLED: '0' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let tail = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        tail = (tail + chunk).slice(-4000);
        const n = chunk.split('\n').filter((l) => l.startsWith('go: downloading')).length;
        if (n > 0 && Math.floor((downloads + n) / 50) > Math.floor(downloads / 50)) out(`  ${downloads + n} Go modules downloaded`);
        downloads += n;
      });
      child.on('error', (err) =>
        reject(new Error(`cannot run 'go' (${err.message}): install Go, or set TEMPORAL_CLI_PATH to a temporal binary`)),
      );
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`go install failed (exit ${code}):\n${tail}`))));
    });
  }, out);
  await mkdir(path.dirname(dir), { recursive: true });
  await rm(dir, { recursive: true, force: true });
  await rename(scratch, dir);
  return binary;
}

export interface TemporalServer {
  address: string;
  uiUrl: string | undefined;
  stop(): Promise<void>;
}

/**
 * A real Temporal dev server with our search attributes registered. With dbFile the history survives
 * restarts (the dev stack); without it the server keeps everything in memory (the tests).
 */
export async function startTemporalServer(opts: {
  binary: string;
  port: number;
  uiPort?: number | undefined;
  dbFile?: string | undefined;
  logFile?: string | undefined;
  out?: Say;
}): Promise<TemporalServer> {
  const out = opts.out ?? defaultSay;
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(opts.port), '--log-level', 'warn'];
  if (opts.uiPort) args.push('--ui-port', String(opts.uiPort));
  else args.push('--headless');
  if (opts.dbFile) {
    await mkdir(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', opts.dbFile);
  }
  for (const key of SEARCH_ATTRIBUTES) args.push('--search-attribute', `${key.name}=Keyword`);

  // The kernel ends the server if this process dies without stopping it (a crash, kill -9): no orphan on the port.
  const cmd = diesWithParent(opts.binary, args);
  const child: ChildProcess = spawn(cmd.command, cmd.args, { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let output = '';
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  let exited: number | null | undefined;
  child.on('exit', (code) => {
    exited = code;
  });

  const address = `127.0.0.1:${opts.port}`;
  await waitFor(
    `the Temporal server at ${address}`,
    async () => {
      if (exited !== undefined) throw new Error(`temporal exited with ${exited}:\n${output}`);
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await connection.healthService.check({});
      } finally {
        await connection.close();
      }
    },
    60_000,
    out,
  ).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });

  return {
    address,
    uiUrl: opts.uiPort ? `http://127.0.0.1:${opts.uiPort}` : undefined,
    async stop() {
      if (exited !== undefined) return;
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
    },
  };
}
