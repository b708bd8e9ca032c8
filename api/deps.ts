import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { StatePolicy } from '../core/config.js';
import type { SecretBox } from '../core/crypto.js';
import type { Db } from '../core/db/pool.js';

export interface ApiDeps {
  db: Db;
  temporal: Client;
  /** Task queue of the cluster worker, which hosts the deployment workflows. */
  taskQueue: string;
  kubernetesEnabled: boolean;
  /** The longest run timeout a template or deployment may ask for. */
  maxRunTimeoutSeconds: number;
  /** How many state versions each deployment keeps, and how large one may be. */
  state: StatePolicy;
  /** Per run and stream: the most log an agent may store. */
  logMaxBytes?: number;
  /** Template builds: where images go, limits on sources. */
  builds: { registry: string | undefined; timeoutSeconds: number; uploadMaxBytes: number; allowFileGitUrls: boolean };
  /** Encrypts sensitive parameter values at rest. */
  secrets: SecretBox;
  /** Reachability checks reported by /healthz; each throws when its dependency is down. */
  probes: Record<string, () => Promise<void>>;
  log: Logger;
  version: string;
}
