/**
 * A test cluster's pod network: a bridge of its own, whose address is the pods' gateway and the host address
 * pods can reach, and the CNI configuration that puts pods on it. Each cluster's bridge and /24 are its own,
 * so clusters (the tests' and a dev stack's) live side by side.
 */
import { randomBytes } from 'node:crypto';
import { run } from './commands.js';

/** Debian's containernetworking-plugins. */
export const CNI_BIN_DIR = '/usr/lib/cni';
/** libcni's cache of each attachment's result (ours are named after the cluster's network). */
export const CNI_RESULTS = '/var/lib/cni/results';

export interface PodNetwork {
  bridge: string;
  subnet: string;
  gateway: string;
}

const thirdOctets = (text: string) => new Set([...text.matchAll(/\b10\.244\.(\d+)\./g)].map((m) => Number(m[1])));

/** A bridge named `bridge` on a /24 of 10.244.0.0/16 no other interface or route uses. */
export async function createPodNetwork(bridge: string): Promise<PodNetwork> {
  for (let attempt = 0; ; attempt++) {
    const used = thirdOctets((await run('ip', ['-4', '-o', 'addr'])) + (await run('ip', ['-4', 'route'])));
    const candidates = Array.from({ length: 256 }, (_, i) => i).filter((i) => !used.has(i));
    if (candidates.length === 0) throw new Error('no free /24 left in 10.244.0.0/16 for the pod network');
    const third = candidates[randomBytes(2).readUInt16BE() % candidates.length]!;
    const network = { bridge, subnet: `10.244.${third}.0/24`, gateway: `10.244.${third}.1` };
    await run('ip', ['link', 'add', 'name', network.bridge, 'type', 'bridge']);
    await run('ip', ['addr', 'add', `${network.gateway}/24`, 'dev', network.bridge]);
    // Two clusters starting at once may both have picked this /24: the later one (by interface) picks again.
    const holders = (await run('ip', ['-4', '-o', 'addr'])).split('\n').filter((l) => l.includes(` 10.244.${third}.`)).map((l) => l.split(/\s+/)[1]);
    if (holders.length === 1 || holders[0] === bridge || attempt >= 5) {
      await run('ip', ['link', 'set', network.bridge, 'up']);
      return network;
    }
    await run('ip', ['link', 'del', network.bridge]);
  }
}

/**
 * Removes the bridge and the firewall plugin's rules for addresses of its /24, which a pod killed without
 * CNI DEL (its cluster died) leaves in CNI-FORWARD. Quiet when there is nothing to remove.
 */
export async function removePodNetwork(bridge: string): Promise<boolean> {
  const address = await run('ip', ['-4', '-o', 'addr', 'show', 'dev', bridge]).catch(() => undefined);
  if (address === undefined) return false;
  const third = [...thirdOctets(address)][0];
  await run('ip', ['link', 'del', bridge]);
  if (third === undefined) return true;
  const rules = await run('iptables', ['-w', '-S', 'CNI-FORWARD']).catch(() => '');
  for (const rule of rules.split('\n')) {
    if (!rule.startsWith('-A ') || rule.includes('"') || !new RegExp(`\\s10\\.244\\.${third}\\.\\d+/32\\b`).test(rule)) continue;
    await run('iptables', ['-w', '-D', ...rule.slice(3).split(' ')]).catch(() => undefined);
  }
  return true;
}

export function cniConfig(network: PodNetwork, ipamDir: string, name: string): string {
  return JSON.stringify(
    {
      cniVersion: '0.4.0',
      name,
      plugins: [
        {
          type: 'bridge',
          bridge: network.bridge,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: network.subnet, gateway: network.gateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: ipamDir },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        // Docker sets the FORWARD policy to DROP, and bridged traffic passes iptables (br_netfilter): this
        // plugin accepts the pods' own traffic.
        { type: 'firewall' },
      ],
    },
    null,
    2,
  );
}
