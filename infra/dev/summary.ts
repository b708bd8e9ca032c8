/**
 * What `npm start` prints about Postgres and Temporal once it serves: where each is, and commands that
 * work as printed. The Temporal CLI is not on anyone's PATH (it is built into the cache), so the command
 * names it by its full path, and the folder to put on PATH is said.
 */
import path from 'node:path';

/** `Postgres     <url>   (…)`; a password the operator gave in DATABASE_URL is not printed. */
export function postgresLine(url: string, embedded: { dataDir: string } | undefined): string {
  if (embedded) return `Postgres     ${url}   (embedded; its data in ${embedded.dataDir})`;
  const shown = new URL(url);
  if (shown.password) shown.password = '***';
  return `Postgres     ${shown.toString()}   (DATABASE_URL)`;
}

/** `Temporal     <address>   (try: <cli> workflow list …)` and where the CLI is, when it is on this machine. */
export function temporalLines(address: string, cli: string | undefined): string[] {
  if (!cli) return [`Temporal     ${address}`];
  return [
    `Temporal     ${address}   (try: ${cli} workflow list --address ${address})`,
    `Temporal CLI ${cli}   (not on PATH; to use it as \`temporal\`: export PATH="${path.dirname(cli)}:$PATH")`,
  ];
}
