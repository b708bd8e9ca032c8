import { lstat, opendir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { SourceRejectedError, quote } from './errors.js';
import { checkLinkTarget, normalizeEntryPath } from './paths.js';
import type { SourceTree } from './tree.js';

/**
 * Reads a folder (a git checkout) into `tree` without following any link: links are recorded as links
 * and checked like an archive's, and FIFOs, sockets and devices are refused. The top-level `.git` is
 * skipped; file contents are read later, when archived (archive.ts checks they did not change meanwhile).
 */
export async function readDirectory(root: string, tree: SourceTree): Promise<void> {
  const info = await lstat(root);
  if (!info.isDirectory()) throw new Error(`${root} is not a directory`);
  await walk(root, '', tree);
}

async function walk(dir: string, rel: string, tree: SourceTree): Promise<void> {
  // opendir lists lazily: a folder of a million names is refused at maxFiles instead of being read whole.
  for await (const dirent of await opendir(dir)) {
    const name = dirent.name;
    if (rel === '' && name === '.git') continue;
    const raw = rel ? `${rel}/${name}` : name;
    const entryPath = normalizeEntryPath(raw);
    const full = path.join(dir, name);
    const info = await lstat(full);
    if (info.isSymbolicLink()) {
      const target = await readlink(full);
      checkLinkTarget(raw, target);
      tree.addSymlink(entryPath, raw, target);
    } else if (info.isDirectory()) {
      tree.addDir(entryPath, raw);
      await walk(full, raw, tree);
    } else if (info.isFile()) {
      tree.checkDeclaredSize(info.size, raw);
      tree.countBytes(info.size, raw);
      tree.addFile(entryPath, raw, { executable: (info.mode & 0o111) !== 0, size: info.size, content: { diskPath: full } });
    } else {
      const kind = info.isFIFO() ? 'FIFO' : info.isSocket() ? 'socket' : 'device';
      throw new SourceRejectedError('SOURCE_SPECIAL_FILE', `${quote(raw)} is a ${kind}; only files, folders and symbolic links are allowed`, raw);
    }
  }
}
