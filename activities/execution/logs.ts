import type { LogStream } from '../../core/db/logs.js';
import { Masker } from './masking.js';

/** Where a run's log goes: Postgres inside the cluster; an HTTP endpoint for remote nodes (to come). */
export interface LogSink {
  /** Bytes of each stream already stored: a resumed collector skips them. */
  storedLengths(runId: string): Promise<Record<LogStream, number>>;
  append(chunk: { runId: string; stream: LogStream; offset: number; at: Date; data: Buffer }): Promise<void>;
}

const FLUSH_BYTES = 256 * 1024;
const FLUSH_MS = 250;

/**
 * Turns a container's log entries into stored chunks: masked, in order within each stream, flushed at least
 * every 250 ms so a follower sees the log as it is produced. Entries are read from the start of the
 * container's log every time; whatever the sink already has is skipped, so a retried activity neither loses
 * nor repeats a byte. Masking is independent of how the input was cut, so the skip is exact.
 */
export class LogCollector {
  private readonly maskers: Record<LogStream, Masker>;
  private readonly produced: Record<LogStream, number> = { stdout: 0, stderr: 0 };
  private readonly pending: Record<LogStream, { offset: number; at: Date; parts: Buffer[]; size: number } | undefined> = {
    stdout: undefined,
    stderr: undefined,
  };
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly runId: string,
    private readonly sink: LogSink,
    secretValues: readonly string[],
    private readonly skip: Record<LogStream, number>,
    /** Bytes kept per stream; past it one marker line is stored and the rest dropped. */
    private readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {
    this.maskers = { stdout: new Masker(secretValues), stderr: new Masker(secretValues) };
    this.timer = setInterval(() => this.flushAll(), FLUSH_MS);
  }

  /** One log entry of a stream, as the engine delivered it. */
  entry(stream: LogStream, at: Date, data: Buffer): void {
    this.emit(stream, at, this.maskers[stream].push(data));
  }

  /** The log has ended: release what masking held back and wait until everything is stored. */
  async end(): Promise<void> {
    clearInterval(this.timer);
    const now = new Date();
    for (const stream of ['stdout', 'stderr'] as const) this.emit(stream, now, this.maskers[stream].end());
    this.flushAll();
    await this.chain;
    if (this.failure instanceof Error) throw this.failure;
    if (this.failure !== undefined) throw new Error('storing the log failed');
  }

  abandon(): void {
    clearInterval(this.timer);
  }

  private readonly cut: Record<LogStream, boolean> = { stdout: false, stderr: false };

  /** Applies the cap: the same input always gives the same output, so a resumed collector's offsets agree. */
  private capped(stream: LogStream, masked: Buffer): Buffer {
    if (this.cut[stream]) return Buffer.alloc(0);
    const room = this.maxBytes - this.produced[stream];
    if (masked.length <= room) return masked;
    this.cut[stream] = true;
    const marker = Buffer.from(`\n[glider-gun: ${stream} cut here: over ${this.maxBytes} bytes; the rest was not kept]\n`);
    return Buffer.concat([masked.subarray(0, Math.max(0, room)), marker]);
  }

  private emit(stream: LogStream, at: Date, masked: Buffer): void {
    let data = this.capped(stream, masked);
    if (data.length === 0) return;
    const start = this.produced[stream];
    this.produced[stream] += data.length;
    const already = this.skip[stream] - start;
    if (already >= data.length) return;
    if (already > 0) data = data.subarray(already);
    const offset = this.produced[stream] - data.length;
    const p = (this.pending[stream] ??= { offset, at, parts: [], size: 0 });
    p.parts.push(data);
    p.size += data.length;
    if (p.size >= FLUSH_BYTES) this.flush(stream);
  }

  private flushAll(): void {
    this.flush('stdout');
    this.flush('stderr');
  }

  private flush(stream: LogStream): void {
    const p = this.pending[stream];
    if (!p || p.size === 0) return;
    this.pending[stream] = undefined;
    const chunk = { runId: this.runId, stream, offset: p.offset, at: p.at, data: Buffer.concat(p.parts) };
    this.chain = this.chain.then(async () => {
      if (this.failure) return;
      try {
        await this.sink.append(chunk);
      } catch (err) {
        this.failure = err;
      }
    });
  }
}

/**
 * Docker's multiplexed stream (attach or logs): frames of [stream type, 0, 0, 0, size (uint32 BE)] then the
 * payload, which from the logs endpoint with `timestamps` starts with an RFC 3339 time and a space.
 */
export class DockerLogDemuxer {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(
    private readonly onEntry: (stream: LogStream, at: Date, data: Buffer) => void,
    private readonly timestamped: boolean,
  ) {}

  push(piece: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, piece]) : piece;
    while (this.buffer.length >= 8) {
      const size = this.buffer.readUInt32BE(4);
      if (this.buffer.length < 8 + size) break;
      const type = this.buffer[0];
      const payload = this.buffer.subarray(8, 8 + size);
      this.buffer = this.buffer.subarray(8 + size);
      if (type !== 1 && type !== 2) continue;
      const space = this.timestamped ? payload.indexOf(0x20) : -1;
      const at = space > 0 ? new Date(payload.subarray(0, space).toString('latin1')) : new Date();
      const data = space > 0 ? payload.subarray(space + 1) : payload;
      if (data.length > 0) this.onEntry(type === 1 ? 'stdout' : 'stderr', Number.isNaN(at.getTime()) ? new Date() : at, data);
    }
  }
}
