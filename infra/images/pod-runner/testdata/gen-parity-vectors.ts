/**
 * `npm run parity-vectors`: rewrites the TypeScript side's reference files the pod-runner's Go tests read
 * (log-vectors.json, state-from-ts.tar.gz). Run it after changing the Docker adapter's masking, log
 * collection or state packing, then `go test ./...` in infra/images/pod-runner: test/unit/parity-vectors.test.ts
 * fails while the committed files are not what the TypeScript code makes.
 */
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { LOG_VECTORS_FILE, logVectors } from './gen-log-vectors.js';
import { STATE_FROM_TS_FILE, stateFromTs } from './gen-state-from-ts.js';

for (const [file, make] of [
  [LOG_VECTORS_FILE, logVectors],
  [STATE_FROM_TS_FILE, stateFromTs],
] as const) {
  await writeFile(file, await make());
  console.log(`wrote ${fileURLToPath(file)}`);
}
