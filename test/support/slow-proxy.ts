/**
 * A TCP proxy on loopback that lets what clients send through at a set rate (what the server answers
 * passes freely): a slow store, made on purpose, in front of a real Postgres. Tests point DATABASE_URL at it.
 */
import net from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';

export interface SlowProxy {
  /** host:port to connect to instead of the upstream. */
  address: string;
  /** Changes the rate for bytes sent from now on (Infinity: no limit). */
  setRate(bytesPerSecond: number): void;
  close(): Promise<void>;
}

/** Passes each piece on once the bytes before it have had their time at `rate()` bytes a second. */
class Throttle extends Transform {
  private due = Date.now();
  constructor(private readonly rate: () => number) {
    super();
  }
  override _transform(piece: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const rate = this.rate();
    if (!Number.isFinite(rate)) {
      done(null, piece);
      return;
    }
    this.due = Math.max(this.due, Date.now()) + (piece.length / rate) * 1000;
    setTimeout(() => done(null, piece), Math.max(0, this.due - Date.now()));
  }
}

export async function startSlowProxy(upstream: { host: string; port: number }, bytesPerSecond: number): Promise<SlowProxy> {
  let rate = bytesPerSecond;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const server_ = net.connect(upstream.port, upstream.host);
    for (const s of [client, server_]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      // Either side failing ends both; the error reaches the application as a closed connection.
      s.on('error', () => {
        client.destroy();
        server_.destroy();
      });
    }
    const throttle = new Throttle(() => rate);
    throttle.on('error', () => server_.destroy());
    client.pipe(throttle).pipe(server_);
    server_.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    setRate(bytesPerSecond_: number) {
      rate = bytesPerSecond_;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The same database URL, reached through the proxy. */
export function throughProxy(databaseUrl: string, proxy: SlowProxy): string {
  const url = new URL(databaseUrl);
  const [host, port] = proxy.address.split(':');
  url.hostname = host!;
  url.port = port!;
  return url.toString();
}
