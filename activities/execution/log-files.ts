import { constants } from 'node:fs';
import { lstat, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { LogStream } from '../../core/db/logs.js';

const READ_BYTES = 64 * 1024;
const MAX_FILES = 100;
const NAME = /^[\x21-\x7e][\x20-\x7e]{0,199}$/;

/**
 * Follows the files a template writes in /logs, so they are stored as the run goes (stream `file:<name>`).
 * Only regular files directly in /logs are read, opened without following links: the folder is the
 * template's to fill, and a link or a swapped sub-folder must never make the node read a host file.
 * A file that shrinks (rotated or truncated) is read again from its start.
 */
export class LogFileTailer {
  private readonly offsets = new Map<string, number>();
  private polling: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly onData: (stream: LogStream, data: Buffer) => void,
  ) {}

  /** Reads what is new; polls never overlap. */
  poll(): Promise<void> {
    this.polling = this.polling.then(() => this.readNew()).catch(() => undefined);
    return this.polling;
  }

  private async readNew(): Promise<void> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((n) => NAME.test(n)).sort().slice(0, MAX_FILES);
    for (const name of names) {
      const full = path.join(this.dir, name);
      if (!(await lstat(full).then((s) => s.isFile(), () => false))) continue;
      const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
      if (!handle) continue;
      try {
        const info = await handle.stat();
        if (!info.isFile()) continue;
        let offset = this.offsets.get(name) ?? 0;
        if (info.size < offset) offset = 0;
        const buffer = Buffer.alloc(READ_BYTES);
        while (offset < info.size) {
          const { bytesRead } = await handle.read(buffer, 0, Math.min(READ_BYTES, info.size - offset), offset);
          if (bytesRead === 0) break;
          this.onData(`file:${name}`, Buffer.from(buffer.subarray(0, bytesRead)));
          offset += bytesRead;
        }
        this.offsets.set(name, offset);
      } finally {
        await handle.close();
      }
    }
  }
}
