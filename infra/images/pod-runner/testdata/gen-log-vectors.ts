/**
 * testdata/log-vectors.json: pieces of a stream, the sensitive values and the cap, and what the Docker
 * adapter's LogCollector (activities/execution/logs.ts, masking.ts) stores for them: the reference for
 * masking_test.go (TestLogCollectorMatchesTypeScript). Deterministic (a seeded generator, no clock), so
 * test/unit/parity-vectors.test.ts can make it again and compare: `npm run parity-vectors` rewrites it.
 */
import { LogCollector, type LogSink } from '../../../../activities/execution/logs.js';
import { secretStrings } from '../../../../activities/execution/masking.js';

export const LOG_VECTORS_FILE = new URL('log-vectors.json', import.meta.url);

/** The file's text. */
export async function logVectors(): Promise<string> {
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const pick = <T>(list: readonly T[]): T => list[rand(list.length)] as T;

  const secretSets: Record<string, unknown>[] = [
    {},
    { password: 'hunter2' },
    { a: 'abc', b: 'abcdef', short: 'xy', n: 12345, o: { k: 'v' } },
    { pem: '-----BEGIN KEY-----\nMIIB\n-----END KEY-----', p: 'pässwört', q: 'aaa' },
    { x: 'aXa', y: 'XaX', z: 'aXaXa' },
  ];
  const filler = ['plain ', 'text\n', 'é', '😀', 'a', 'X', '\u0000', ' ', 'abc', 'de'];
  // The collector stamps nothing it stores with this time; a fixed one keeps the run free of the clock.
  const at = new Date(0);

  const vectors: { secrets: Record<string, unknown>; maxBytes: number; pieces: string[]; stored: string }[] = [];
  for (let v = 0; v < 150; v++) {
    const secrets = pick(secretSets);
    const values = secretStrings(secrets);
    let text = '';
    const parts = 5 + rand(40);
    for (let i = 0; i < parts; i++) text += rand(3) === 0 && values.length ? pick(values) : pick(filler);
    const bytes = Buffer.from(text);
    const pieces: Buffer[] = [];
    for (let offset = 0; offset < bytes.length; ) {
      const size = Math.min(bytes.length - offset, rand(3) === 0 ? rand(4) : rand(40));
      pieces.push(bytes.subarray(offset, offset + size));
      offset += size;
    }
    const maxBytes = pick([Number.POSITIVE_INFINITY, 1, 2, 5, 17, Math.max(1, bytes.length - 3), bytes.length, bytes.length + 1]);
    const stored: Buffer[] = [];
    const sink: LogSink = {
      storedLengths: () => Promise.resolve({}),
      append: (chunk) => {
        stored[chunk.offset] = chunk.data;
        return Promise.resolve();
      },
    };
    const collector = new LogCollector('run', sink, values, {}, maxBytes);
    for (const p of pieces) collector.entry('stdout', at, p);
    await collector.end();
    vectors.push({
      secrets,
      maxBytes: Number.isFinite(maxBytes) ? maxBytes : -1, // -1: no cap
      pieces: pieces.map((p) => p.toString('base64')),
      stored: Buffer.concat(stored.filter(Boolean)).toString('base64'),
    });
  }
  return `[\n${vectors.map((v) => JSON.stringify(v)).join(',\n')}\n]\n`;
}
