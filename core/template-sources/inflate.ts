import { Readable } from 'node:stream';
import zlib from 'node:zlib';

/**
 * Node's zlib streams honour back-pressure only between input chunks: one chunk is inflated whole
 * whatever it expands to, so 64 KiB of a crafted deflate stream can become 64 MiB in memory before the
 * reader sees any of it. Feeding the compressed bytes in small slices bounds that to about
 * SLICE × 1032 (deflate's best ratio), and the reader, which counts what it gets, stops the inflation
 * as soon as it has seen enough.
 */
const SLICE = 4 * 1024;
const OUTPUT_CHUNK = 64 * 1024;

function* slices(input: Buffer): Generator<Buffer> {
  for (let at = 0; at < input.length; at += SLICE) yield input.subarray(at, Math.min(at + SLICE, input.length));
}

/**
 * Decompresses `input` (raw deflate for zip entries, gzip for .tgz), yielding output as it is produced.
 * Leaving the loop early (a limit reached, an error thrown) stops the inflation and frees it.
 */
export async function* inflateSlowly(input: Buffer, format: 'deflate-raw' | 'gzip'): AsyncGenerator<Buffer> {
  const inflater = format === 'gzip' ? zlib.createGunzip({ chunkSize: OUTPUT_CHUNK }) : zlib.createInflateRaw({ chunkSize: OUTPUT_CHUNK });
  const source = Readable.from(slices(input), { objectMode: false, highWaterMark: SLICE });
  source.pipe(inflater);
  try {
    for await (const chunk of inflater as AsyncIterable<Buffer>) yield chunk;
  } finally {
    source.unpipe(inflater);
    source.destroy();
    inflater.destroy();
  }
}
