import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { Config, StatePolicy } from '../core/config.js';
import type { CertificateAuthority } from '../core/pki.js';
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
  /** Nodes and their gateway (docs/remote-nodes.md). */
  nodes: {
    ca: CertificateAuthority;
    /** What the gateway presents (X-Glider-Gateway). */
    gatewaySecret: string;
    /** host:port nodes dial, told to a node when it is created. */
    gatewayAddress: string;
    enrolmentSeconds: number;
    certificateDays: number;
    /** Run defaults, for the grants nodes fetch. */
    runs: Config['runs'];
  };
}
