/**
 * A template build's context stream (activities/templates/build-context.ts) whose reader goes away half-way,
 * as when the Docker engine refuses or drops a build: the reader sees its own error, and nothing is thrown
 * out of the process.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { templateBuildContext } from '../../activities/templates/build-context.js';

async function sourceOf(files: Record<string, Buffer>): Promise<Buffer> {
  const pack = tar.pack();
  for (const [name, content] of Object.entries(files)) pack.entry({ name }, content);
  pack.finalize();
  return buffer(Readable.from(pack).pipe(zlib.createGzip()));
}

describe('template build context under failure', () => {
  for (const how of ['stops reading', 'destroys it with an error'] as const) {
    it(`ends cleanly when its reader ${how} half-way`, async () => {
      const crashes: unknown[] = [];
      const onCrash = (err: unknown) => crashes.push(err);
      process.on('uncaughtException', onCrash);
      process.on('unhandledRejection', onCrash);
      try {
        const context = templateBuildContext('FROM scratch\n', await sourceOf({ big: randomBytes(8 * 1024 * 1024), more: randomBytes(1024 * 1024) }));
        let read = 0;
        const reading = (async () => {
          for await (const chunk of context) {
            read += (chunk as Buffer).length;
            if (read < 1024 * 1024) continue;
            if (how === 'stops reading') throw new Error('the engine refused the build');
            context.destroy(new Error('the engine went away'));
          }
        })();
        await assert.rejects(reading, /the engine (refused the build|went away)/);
        await new Promise((r) => setTimeout(r, 300));
        assert.deepEqual(crashes, [], 'nothing was thrown out of the process');
      } finally {
        process.off('uncaughtException', onCrash);
        process.off('unhandledRejection', onCrash);
      }
    });
  }
});
