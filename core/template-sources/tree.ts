import { SourceRejectedError, quote } from './errors.js';
import type { SourceLimits } from './limits.js';

/** A regular file's bytes: already read (uploads) or still on disk (a checkout), read again when archived. */
export type FileContent = { chunks: Buffer[] } | { diskPath: string };

interface DirNode {
  kind: 'dir';
  children: Map<string, Node>;
  /** Named by an entry of its own, not only implied by the paths under it. */
  explicit: boolean;
}
interface FileNode {
  kind: 'file';
  executable: boolean;
  size: number;
  content: FileContent;
}
interface LinkNode {
  kind: 'symlink';
  target: string;
  path: string;
}
type Node = DirNode | FileNode | LinkNode;

export type TreeEntry =
  | { path: string; kind: 'dir' }
  | { path: string; kind: 'file'; executable: boolean; size: number; content: FileContent }
  | { path: string; kind: 'symlink'; target: string };

/** Like the kernel's ELOOP limit: a link resolving through more links than this is refused. */
const MAX_LINK_HOPS = 40;

/** A place reached while resolving a link: a real folder of the tree, or a name under one that is not a folder. */
interface Cell {
  dir: DirNode | undefined;
  up: Cell | undefined;
}

/**
 * The tree a source describes, built entry by entry as an archive or folder is read. It enforces what
 * needs the whole picture: the entry count (folders implied by a path count too, so deep paths cannot
 * smuggle in unbounded folders), the byte budget, unique paths, that nothing lives under a file or link,
 * and, once complete, that every link resolves inside the tree.
 */
export class SourceTree {
  private readonly root: DirNode = { kind: 'dir', children: new Map(), explicit: true };
  private entries = 0;
  private contentBytes = 0;
  private leaves = 0;

  constructor(private readonly limits: Required<SourceLimits>) {}

  get bytes(): number {
    return this.contentBytes;
  }
  /** Regular files and links (what a person would call the files of the source). */
  get files(): number {
    return this.leaves;
  }

  /** Counts content bytes as they are decompressed: refuses the moment the total passes maxBytes. */
  countBytes(n: number, entry: string): void {
    this.contentBytes += n;
    if (this.contentBytes > this.limits.maxBytes) {
      throw new SourceRejectedError('SOURCE_TOO_LARGE', `the source holds more than ${this.limits.maxBytes} bytes uncompressed (at ${quote(entry)})`, entry);
    }
  }

  /**
   * Refuses an entry whose declared size alone would pass maxBytes, before inflating any of it. A declared
   * size is only ever trusted to refuse: what is accepted is what countBytes saw.
   */
  checkDeclaredSize(n: number, entry: string): void {
    if (this.contentBytes + n > this.limits.maxBytes) {
      throw new SourceRejectedError('SOURCE_TOO_LARGE', `${quote(entry)} is ${n} bytes: the source would hold more than ${this.limits.maxBytes} bytes uncompressed`, entry);
    }
  }

  addDir(path: string, raw: string): void {
    if (path === '') return; // the root itself ('./')
    this.add(path, raw, { kind: 'dir', children: new Map(), explicit: true });
  }
  addFile(path: string, raw: string, file: { executable: boolean; size: number; content: FileContent }): void {
    this.add(path, raw, { kind: 'file', ...file });
  }
  addSymlink(path: string, raw: string, target: string): void {
    this.add(path, raw, { kind: 'symlink', target, path });
  }

  private count(raw: string): void {
    if (++this.entries > this.limits.maxFiles) {
      throw new SourceRejectedError('SOURCE_TOO_MANY_FILES', `the source has more than ${this.limits.maxFiles} entries (files, folders and links)`, raw);
    }
  }

  private add(path: string, raw: string, node: Node): void {
    if (path === '') throw new SourceRejectedError('SOURCE_BAD_PATH', `entry ${quote(raw)} names the root folder itself but is not a folder`, raw);
    const parts = path.split('/');
    const name = parts.pop()!;
    let dir = this.root;
    for (const [i, part] of parts.entries()) {
      const child = dir.children.get(part);
      if (child === undefined) {
        const implied: DirNode = { kind: 'dir', children: new Map(), explicit: false };
        dir.children.set(part, implied);
        this.count(raw);
        dir = implied;
      } else if (child.kind === 'dir') {
        dir = child;
      } else {
        const parent = parts.slice(0, i + 1).join('/');
        throw new SourceRejectedError('SOURCE_DUPLICATE_PATH', `${quote(raw)} is inside ${quote(parent)}, which is a ${child.kind === 'file' ? 'file' : 'link'}, not a folder`, raw);
      }
    }
    const existing = dir.children.get(name);
    if (existing !== undefined) {
      if (existing.kind === 'dir' && node.kind === 'dir' && !existing.explicit) {
        existing.explicit = true;
        return;
      }
      const why = existing.kind === 'dir' && !existing.explicit ? 'is also the folder of other entries' : 'appears more than once';
      throw new SourceRejectedError('SOURCE_DUPLICATE_PATH', `${quote(raw)} ${why}`, raw);
    }
    dir.children.set(name, node);
    this.count(raw);
    if (node.kind !== 'dir') this.leaves++;
  }

  /**
   * Follows every link the way the kernel would once the tree is on disk, through other links and
   * `..`, and refuses any that leaves the root at any step. Checking each target lexically alone is not
   * enough: with `up -> ../..` (fine by itself) a link `l -> x/y/up/..` escapes. Resolved links are
   * remembered, so each target is walked once whatever the number of links pointing through it.
   */
  checkLinks(): void {
    const rootCell: Cell = { dir: this.root, up: undefined };
    const resolved = new Map<LinkNode, Cell>();
    const resolving = new Set<LinkNode>();
    const resolve = (link: LinkNode, hops: number): Cell => {
      const known = resolved.get(link);
      if (known) return known;
      if (resolving.has(link) || hops > MAX_LINK_HOPS) {
        throw new SourceRejectedError('SOURCE_LINK_LOOP', `link ${quote(link.path)} cannot be resolved: it loops or goes through more than ${MAX_LINK_HOPS} links`, link.path);
      }
      resolving.add(link);
      let cell = rootCell;
      for (const part of link.path.split('/').slice(0, -1)) cell = { dir: cell.dir?.children.get(part) as DirNode, up: cell };
      for (const part of link.target.split('/')) {
        if (part === '' || part === '.') continue;
        if (part === '..') {
          if (!cell.up) {
            throw new SourceRejectedError('SOURCE_LINK_ESCAPES', `link ${quote(link.path)} -> ${quote(link.target)} leads outside the source`, link.path);
          }
          cell = cell.up;
          continue;
        }
        const child = cell.dir?.children.get(part);
        cell = child?.kind === 'symlink' ? resolve(child, hops + 1) : { dir: child?.kind === 'dir' ? child : undefined, up: cell };
      }
      resolving.delete(link);
      resolved.set(link, cell);
      return cell;
    };
    for (const { node } of this.list()) if (node.kind === 'symlink') resolve(node, 0);
  }

  /** Every entry, sorted by path compared byte by byte (so a folder always comes before what is in it). */
  list(): (TreeEntry & { node: Node })[] {
    const out: (TreeEntry & { node: Node; key: Buffer })[] = [];
    const walk = (dir: DirNode, prefix: string) => {
      for (const [name, node] of dir.children) {
        const path = prefix ? `${prefix}/${name}` : name;
        const key = Buffer.from(path);
        if (node.kind === 'dir') {
          out.push({ path, kind: 'dir', node, key });
          walk(node, path);
        } else if (node.kind === 'file') {
          out.push({ path, kind: 'file', executable: node.executable, size: node.size, content: node.content, node, key });
        } else {
          out.push({ path, kind: 'symlink', target: node.target, node, key });
        }
      }
    };
    walk(this.root, '');
    return out.sort((a, b) => Buffer.compare(a.key, b.key));
  }
}
