import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { MAX_OUTPUTS_BYTES, OUTPUTS_FILE, parseOutputs } from '../../core/outputs.js';


/**
 * Reads /state/outputs.json as the template left it. The file is the template's to write, so it is
 * opened without following links (a link to a host file must not leak it) and bounded in size.
 * A missing file means no outputs; anything wrong with it is a warning, never a failed run.
 */
export async function readOutputs(stateDir: string): Promise<{ outputs?: Record<string, unknown>; warnings: string[] }> {
  const file = path.join(stateDir, OUTPUTS_FILE);
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { warnings: [] };
    if (code === 'ELOOP') return { warnings: [`${OUTPUTS_FILE} is a symbolic link; outputs ignored`] };
    return { warnings: [`${OUTPUTS_FILE} could not be read (${code ?? String(err)}); outputs ignored`] };
  }
  try {
    const info = await handle.stat();
    if (!info.isFile()) return { warnings: [`${OUTPUTS_FILE} is not a regular file; outputs ignored`] };
    if (info.size > MAX_OUTPUTS_BYTES) {
      return { warnings: [`${OUTPUTS_FILE} is ${info.size} bytes, over the ${MAX_OUTPUTS_BYTES}-byte limit; outputs ignored`] };
    }
    return parseOutputs(await handle.readFile('utf8'));
  } finally {
    await handle.close();
  }
}
