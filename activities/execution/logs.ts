import type { LogStream } from '../../core/db/logs.js';
import { Masker } from './masking.js';

/** Where a run's log goes: Postgres inside the cluster; an HTTP endpoint for remote nodes (to come). */
export interface LogSink {
  /** Bytes of each stream already stored: a resumed collector skips them. */
  storedLengths(runId: string): Promise<Partial<Record<LogStream, number>>>;
  append(chunk: { runId: string; stream: LogStream; offset: number; at: Date; data: Buffer }): Promise<void>;
}

const FLUSH_BYTES = 256 * 1024;
const FLUSH_MS = 250;

interface StreamState {
  masker: Masker;
  produced: number;
  cut: boolean;
  pending?: { offset: number; at: Date; parts: Buffer[]; size: number } | undefined;
}

/**
 * Turns a run's output (stdout, stderr, files under /logs) into stored chunks: masked, in order within each
 * stream, flushed at least every 250 ms so a follower sees the log as it is produced. Sources are read from
 * their start every time; whatever the sink already has is skipped, so a retried activity neither loses nor
 * repeats a byte. Masking and the cap are independent of how the input was cut, so the skip is exact.
 */
export class LogCollector {
  private readonly streams = new Map<LogStream, StreamState>();
  private chain: Promise<void> = Promise.resolve();
  private failure: unknown;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly runId: string,
    private readonly sink: LogSink,
    private readonly secretValues: readonly string[],
    private readonly skip: Partial<Record<LogStream, number>>,
    /** Bytes kept per stream; past it one marker line is stored and the rest dropped. */
    private readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {
    this.timer = setInterval(() => this.flushAll(), FLUSH_MS);
  }

  private state(stream: LogStream): StreamState {
    let s = this.streams.get(stream);
    if (!s) {
      s = { masker: new Masker(this.secretValues), produced: 0, cut: false };
      this.streams.set(stream, s);
    }
    return s;
  }

  /** One piece of a stream, as its source delivered it. */
  entry(stream: LogStream, at: Date, data: Buffer): void {
    this.emit(stream, at, this.state(stream).masker.push(data));
  }

  /** The log has ended: release what masking held back and wait until everything is stored. */
  async end(): Promise<void> {
    clearInterval(this.timer);
    const now = new Date();
    for (const [stream, s] of this.streams) this.emit(stream, now, s.masker.end());
    this.flushAll();
    await this.chain;
    if (this.failure instanceof Error) throw this.failure;
    if (this.failure !== undefined) throw new Error('storing the log failed');
  }

  abandon(): void {
    clearInterval(this.timer);
  }

  /** Applies the cap: the same input always gives the same output, so a resumed collector's offsets agree. */
  private capped(stream: LogStream, s: StreamState, masked: Buffer): Buffer {
    if (s.cut) return Buffer.alloc(0);
    const room = this.maxBytes - s.produced;
    if (masked.length <= room) return masked;
    s.cut = true;
    const marker = Buffer.from(`\n[glider-gun: ${stream} cut here: over ${this.maxBytes} bytes; the rest was not kept]\n`);
    return Buffer.concat([masked.subarray(0, Math.max(0, room)), marker]);
  }

  private emit(stream: LogStream, at: Date, masked: Buffer): void {
    const s = this.state(stream);
    let data = this.capped(stream, s, masked);
    if (data.length === 0) return;
    const start = s.produced;
    s.produced += data.length;
    const already = (this.skip[stream] ?? 0) - start;
    if (already >= data.length) return;
    if (already > 0) data = data.subarray(already);
    const offset = s.produced - data.length;
    const p = (s.pending ??= { offset, at, parts: [], size: 0 });
    p.parts.push(data);
    p.size += data.length;
    if (p.size >= FLUSH_BYTES) this.flush(stream, s);
  }

  private flushAll(): void {
    for (const [stream, s] of this.streams) this.flush(stream, s);
  }

  private flush(stream: LogStream, s: StreamState): void {
    const p = s.pending;
    if (!p || p.size === 0) return;
    s.pending = undefined;
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
    private readonly onEntry: (stream: 'stdout' | 'stderr', at: Date, data: Buffer) => void,
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
