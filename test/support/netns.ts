/**
 * A network namespace of its own for a process under test (a remote node), joined to this host by one veth
 * pair: the namespace has its `lo` and one /30 address, no default route, and the host side of the pair lets
 * in only the TCP port it is told (`allowOnly`), so the process reaches that one address:port and nothing
 * else: not the host's 127.0.0.1 (the namespace has its own loopback), not the host's other addresses (no
 * route), not the host's other services on the veth address (rejected).
 *
 * `cut()` makes the link a black hole: every packet that arrives on either end of the pair is dropped
 * (iptables DROP in INPUT, on the host for the host's end and inside the namespace for the namespace's
 * end). Nobody is told: no RST, no ICMP, no error on a send, the interfaces stay up and the routes stay, so
 * an established TCP connection just stops hearing from its peer, as when a cable is pulled somewhere between
 * two sites, and carries on if `restore()` comes before either end gives up. (Setting the link down would
 * take the host's routes to the namespace away and make the host's sends fail with EHOSTUNREACH at once; a
 * DROP in OUTPUT makes the sender's own write fail with EPERM; `tc` has no qdisc on this kernel.)
 *
 * Needs root, `ip` and `iptables` (infra/dev/provision-host.sh). Names carry a random suffix (parallel test
 * files each make their own); `destroy()` removes everything, processes left inside included.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface IsolatedNetwork {
  /** The namespace: `gg-<suffix>`. */
  readonly name: string;
  /** The host's end of the veth pair (`ggh<suffix>`, at most 15 characters). */
  readonly hostInterface: string;
  /** The namespace's end (`ggn<suffix>`). */
  readonly namespaceInterface: string;
  /** The host's address on the pair: the one address the namespace has a route to. */
  readonly hostAddress: string;
  /** The namespace's own address on the pair. */
  readonly address: string;
  /** Spawns `command` inside the namespace (`ip netns exec`: the child's pid is the command's own). */
  spawn(command: string, args: string[], options?: SpawnOptions): ChildProcess;
  /** Runs `command` inside the namespace to its end. */
  exec(command: string, args: string[], timeoutMs?: number): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** From now on the host takes nothing from the namespace but TCP to `port` (everything else is rejected). */
  allowOnly(port: number): Promise<void>;
  /** Every packet either way is dropped, silently (see above). */
  cut(): Promise<void>;
  /** Packets flow again. */
  restore(): Promise<void>;
  readonly isCut: boolean;
  /** Kills what still runs inside, removes the rules, the namespace and the pair. Safe to call twice. */
  destroy(): Promise<void>;
}

const ip = (...args: string[]) => run('ip', args);

/** A /30 in 10.213.0.0/16 that no interface of this host has yet: .1 the host's, .2 the namespace's. */
async function freeSubnet(): Promise<{ host: string; ns: string }> {
  const { stdout } = await ip('-o', '-4', 'addr', 'show');
  for (let tries = 0; tries < 50; tries++) {
    const third = randomInt(0, 256);
    const base = randomInt(0, 64) * 4;
    const prefix = `10.213.${third}.`;
    const taken = [...stdout.matchAll(/inet (10\.213\.\d+\.\d+)\//g)].some(([, a]) => a!.startsWith(prefix) && Math.floor(Number(a!.split('.')[3]) / 4) * 4 === base);
    if (!taken) return { host: `${prefix}${base + 1}`, ns: `${prefix}${base + 2}` };
  }
  throw new Error('no free /30 in 10.213.0.0/16');
}

export async function createIsolatedNetwork(): Promise<IsolatedNetwork> {
  const suffix = randomBytes(4).toString('hex').slice(0, 7);
  const name = `gg-${suffix}`;
  const hostInterface = `ggh${suffix}`;
  const namespaceInterface = `ggn${suffix}`;
  const tag = `glider-gun-test ${name}`;
  const { host: hostAddress, ns: address } = await freeSubnet();
  let cut = false;
  let destroyed = false;

  const inside = (...args: string[]) => run('ip', ['netns', 'exec', name, ...args]);
  /** The host's INPUT rules of this network, as `-D` argument lists (to remove them). */
  const ownHostRules = async (): Promise<string[][]> => {
    const { stdout } = await run('iptables', ['-S', 'INPUT']);
    return stdout
      .split('\n')
      .filter((l) => l.startsWith('-A INPUT ') && l.includes(`-i ${hostInterface} `))
      .map((l) => ['-D', ...(l.slice(3).match(/"[^"]*"|\S+/g) ?? []).map((w) => w.replace(/^"|"$/g, ''))]);
  };
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    const pids = (await ip('netns', 'pids', name).catch(() => ({ stdout: '' }))).stdout.split(/\s+/).filter(Boolean);
    // Only what this network's user started runs in it.
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone already
      }
    }
    for (const rule of await ownHostRules().catch(() => [])) await run('iptables', rule).catch(() => undefined);
    await ip('link', 'del', hostInterface).catch(() => undefined);
    await ip('netns', 'del', name).catch(() => undefined);
  };

  try {
    await ip('netns', 'add', name);
    await ip('link', 'add', hostInterface, 'type', 'veth', 'peer', 'name', namespaceInterface, 'netns', name);
    await ip('addr', 'add', `${hostAddress}/30`, 'dev', hostInterface);
    await ip('link', 'set', hostInterface, 'up');
    await inside('ip', 'link', 'set', 'lo', 'up');
    await inside('ip', 'addr', 'add', `${address}/30`, 'dev', namespaceInterface);
    await inside('ip', 'link', 'set', namespaceInterface, 'up');
  } catch (err) {
    await destroy();
    throw err;
  }

  const comment = (what: string) => ['-m', 'comment', '--comment', `${tag} ${what}`];
  return {
    name,
    hostInterface,
    namespaceInterface,
    hostAddress,
    address,
    spawn: (command, args, options = {}) => spawn('ip', ['netns', 'exec', name, command, ...args], options),
    exec: (command, args, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        execFile('ip', ['netns', 'exec', name, command, ...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
          const code = (err as { code?: unknown } | null)?.code;
          if (err && typeof code !== 'number') reject(new Error(`ip netns exec ${name} ${command}: ${(err as Error).message}`));
          else resolve({ code: typeof code === 'number' ? code : 0, stdout, stderr });
        });
      }),
    async allowOnly(port) {
      // Appended in this order: the port is accepted before the rest is rejected; cut() inserts above both.
      await run('iptables', ['-A', 'INPUT', '-i', hostInterface, '-p', 'tcp', '--dport', String(port), ...comment('allow'), '-j', 'ACCEPT']);
      await run('iptables', ['-A', 'INPUT', '-i', hostInterface, ...comment('reject'), '-j', 'REJECT']);
    },
    async cut() {
      if (cut) return;
      await run('iptables', ['-I', 'INPUT', '1', '-i', hostInterface, ...comment('cut'), '-j', 'DROP']);
      await inside('iptables', '-I', 'INPUT', '1', '-i', namespaceInterface, ...comment('cut'), '-j', 'DROP');
      cut = true;
    },
    async restore() {
      if (!cut) return;
      await run('iptables', ['-D', 'INPUT', '-i', hostInterface, ...comment('cut'), '-j', 'DROP']);
      await inside('iptables', '-D', 'INPUT', '-i', namespaceInterface, ...comment('cut'), '-j', 'DROP');
      cut = false;
    },
    get isCut() {
      return cut;
    },
    destroy,
  };
}

/** What a TCP connect to host:port came to, from inside the namespace (from the host with `null`): 'connected', or the error's code. */
export async function probeTcp(net: IsolatedNetwork | null, host: string, port: number, timeoutMs = 2_000): Promise<string> {
  const script = `const s=require('node:net').connect({host:${JSON.stringify(host)},port:${port}});` +
    `const t=setTimeout(()=>{console.log('TIMEOUT');process.exit(0)},${timeoutMs});` +
    `s.on('connect',()=>{console.log('connected');s.destroy();clearTimeout(t)});` +
    `s.on('error',(e)=>{console.log(e.code||e.message);clearTimeout(t)});`;
  const { stdout } = net ? await net.exec(process.execPath, ['-e', script], timeoutMs + 10_000) : await run(process.execPath, ['-e', script], { timeout: timeoutMs + 10_000 });
  return stdout.trim();
}
