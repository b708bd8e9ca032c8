/** Running the machine's tools from the dev infrastructure: to their end, or as a GET to a daemon. */
import { execFile } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';

/** Root's tools (ip, iptables, containerd …) even when PATH is a user's. */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const systemEnv = (): NodeJS.ProcessEnv => ({ ...process.env, PATH: `${process.env.PATH ?? ''}:${SYSTEM_PATH}` });

export async function isExecutable(file: string): Promise<boolean> {
  return access(file, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** Runs a command to its end; its stdout, or an error with its stderr. */
export function run(command: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { env: opts.env ?? systemEnv(), maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 120_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${path.basename(command)} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** GET over HTTP(S); fails unless the status is 2xx. */
export function get(url: string, tls: https.RequestOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = (url.startsWith('https:') ? https : http).get(url, { ...tls, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode} ${body.slice(0, 200)}`))));
    });
    request.on('timeout', () => request.destroy(new Error(`${url}: timed out`)));
    request.on('error', reject);
  });
}

export async function tail(file: string, lines = 40): Promise<string> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text.split('\n').slice(-lines - 1).join('\n');
}
