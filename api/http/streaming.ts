import type { Response } from 'express';

/** The client has gone away (closed its connection, or the response was destroyed): nothing more reaches it. */
export function gone(res: Response): boolean {
  return res.destroyed || res.writableEnded;
}

/**
 * Writes one piece of a streamed answer. Waits while the client reads slowly, and answers false, instead of
 * waiting for a 'drain' that never comes, once it has gone: the caller stops producing then.
 */
export function send(res: Response, chunk: string | Buffer): Promise<boolean> {
  if (gone(res)) return Promise.resolve(false);
  if (res.write(chunk)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const settle = (written: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(written);
    };
    const onDrain = () => settle(true);
    const onClose = () => settle(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}

/** Waits `ms`, or less if the client goes away meanwhile, so a follower notices a closed connection at once. */
export function pause(res: Response, ms: number): Promise<void> {
  if (gone(res)) return Promise.resolve();
  return new Promise((resolve) => {
    const settle = () => {
      clearTimeout(timer);
      res.off('close', settle);
      resolve();
    };
    const timer = setTimeout(settle, ms);
    res.on('close', settle);
  });
}
