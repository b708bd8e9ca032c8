import { randomInt } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';

/** An unused TCP port on 127.0.0.1, so test stacks never collide with a running dev stack. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export async function isPortInUse(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A free port to keep across restarts (the dev registry's, whose port every built image names): below the
 * kernel's ephemeral range, which outgoing connections take their local ports from; one of them holding the
 * port when we listen again would fail the listen with EADDRINUSE.
 */
export async function keepablePort(host = '127.0.0.1'): Promise<number> {
  const range = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '32768 60999');
  const ephemeralFrom = Number(range.trim().split(/\s+/)[0]) || 32768;
  const low = Math.min(20_000, Math.floor(ephemeralFrom / 2));
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = randomInt(low, ephemeralFrom);
    const free = await new Promise<boolean>((resolve) => {
      const server = net.createServer();
      server.once('error', () => resolve(false));
      server.listen(port, host, () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
  return freePort();
}
