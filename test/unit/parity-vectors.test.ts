import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import zlib from 'node:zlib';
import { LOG_VECTORS_FILE, logVectors } from '../../infra/images/pod-runner/testdata/gen-log-vectors.js';
import { STATE_FROM_TS_FILE, stateFromTs } from '../../infra/images/pod-runner/testdata/gen-state-from-ts.js';

/**
 * The pod-runner's Go tests check the runner against files the TypeScript side made (its log masking and
 * collection, its state archives). Those files prove parity only while they are what today's TypeScript
 * makes: a change on this side without `npm run parity-vectors` fails here, before the Go tests compare
 * against a stale reference.
 */
describe('the TypeScript→Go parity vectors are what the TypeScript code makes today', () => {
  const hint = 'the TypeScript side changed: run `npm run parity-vectors`, then `go test ./...` in infra/images/pod-runner, and commit both files';

  it('log-vectors.json: what the LogCollector stores, masked and capped', async () => {
    const committed = await readFile(LOG_VECTORS_FILE, 'utf8');
    const made = await logVectors();
    // Byte for byte, but the first differing vector is what a reader needs to see.
    const a = committed.split('\n');
    const b = made.split('\n');
    const first = a.findIndex((line, i) => line !== b[i]);
    assert.equal(a.length, b.length, `${hint}: ${b.length - 2} vectors made, ${a.length - 2} committed`);
    assert.equal(first, -1, `${hint}: line ${first + 1} differs:\n  committed ${a[first]?.slice(0, 300)}\n  made      ${b[first]?.slice(0, 300)}`);
  });

  it('state-from-ts.tar.gz: what packState archives', async () => {
    // The tar inside is compared: the deflate stream may differ between zlib builds (Node's zlib picks
    // CPU-specific code), while the Go side reads only what it inflates to.
    const committed = zlib.gunzipSync(await readFile(STATE_FROM_TS_FILE));
    const made = zlib.gunzipSync(await stateFromTs());
    assert.equal(made.length, committed.length, `${hint}: the tar is ${made.length} bytes, ${committed.length} committed`);
    const at = made.findIndex((byte, i) => byte !== committed[i]);
    assert.equal(at, -1, `${hint}: the tar differs from byte ${at} (entry header at ${Math.floor(at / 512) * 512})`);
  });
});
