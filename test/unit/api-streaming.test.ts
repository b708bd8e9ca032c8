/**
 * api/http/streaming.ts on a real HTTP server and real sockets: a streamed answer (state archive, run log,
 * build log) stops as soon as its client goes away, even while it waits for a slow client to read.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import { pause, send } from '../../api/http/streaming.js';

describe('streamed answers', () => {
  let server: http.Server;
  let url = '';
  let handled: { written: number; ended: boolean; done: Promise<void> } | undefined;

  before(async () => {
    const app = express();
    // 64 MiB in 64 KiB pieces: far more than the socket buffers hold, so the writer waits on the client.
    app.get('/stream', (_req, res) => {
      const state = { written: 0, ended: false, done: Promise.resolve() };
      state.done = (async () => {
        const piece = Buffer.alloc(64 * 1024, 120);
        for (let i = 0; i < 1024; i++) {
          if (!(await send(res, piece))) break;
          state.written++;
        }
        state.ended = true;
        res.end();
      })();
      handled = state;
    });
    app.get('/follow', (_req, res) => {
      const state = { written: 0, ended: false, done: Promise.resolve() };
      state.done = (async () => {
        res.flushHeaders();
        await pause(res, 60_000);
        state.ended = true;
      })();
      handled = state;
    });
    server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
  });

  /** Reads `bytes` of the answer, stops reading a while (the server's writes back up), then goes away. */
  function readThenLeave(path: string, bytes: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.get(`${url}${path}`, (res) => {
        let read = 0;
        const leave = () => {
          res.pause();
          setTimeout(() => {
            req.destroy();
            resolve();
          }, 300);
        };
        if (bytes === 0) leave();
        res.on('data', (d: Buffer) => {
          read += d.length;
          if (read >= bytes && !res.isPaused()) leave();
        });
      });
      req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    });
  }

  const endsSoon = async (what: string) => {
    const ended = await Promise.race([handled!.done.then(() => true), new Promise((r) => setTimeout(() => r(false), 3_000))]);
    assert.ok(ended, `${what} ended once its client had gone`);
  };

  it('stops writing once the client has gone, though it was waiting for the client to read', async () => {
    await readThenLeave('/stream', 256 * 1024);
    await endsSoon('the writer');
    assert.ok(handled!.ended);
    assert.ok(handled!.written < 1024, `stopped early (${handled!.written} pieces written)`);
  });

  it('stops a follower\'s pause once the client has gone', async () => {
    await readThenLeave('/follow', 0);
    await endsSoon('the pause');
  });
});
