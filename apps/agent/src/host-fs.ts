/**
 * Every read of host state goes through one root directory, so the same collectors read the live
 * host (`/`), a `capture`d copy of one, and generated fixture trees. Under a root other than `/`,
 * symlinks are followed here, component by component, as if the root were `/` (a chroot without
 * privileges): sysfs is a forest of links, and a captured or fixture tree must never lead a read
 * outside itself.
 */
import { lstat, open, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';

/**
 * Error codes that describe the host's state (absent, unreadable, not applicable), not a failure.
 * ESRCH: a /proc/<pid> file whose process exited between open and read.
 */
const STATE_ERROR_CODES = new Set([
  'ENOENT',
  'ENOTDIR',
  'EACCES',
  'EINVAL',
  'ELOOP',
  'EPERM',
  'ESRCH',
]);

/** Linux gives up after 40 links in one lookup (MAXSYMLINKS); so do we, which also ends cycles. */
const MAX_LINK_HOPS = 40;

export type EntryType = 'file' | 'directory' | 'symlink' | 'other';

export interface ResolveOptions {
  /**
   * Called for every symlink followed: `at` is the link's own location (its parents resolved),
   * `target` its text verbatim. `capture` uses it to recreate the same links in a copy.
   */
  onLink?: (at: string, target: string) => void;
}

function isStateError(error: unknown): boolean {
  return (
    error instanceof Error &&
    'code' in error &&
    typeof error.code === 'string' &&
    STATE_ERROR_CODES.has(error.code)
  );
}

function splitPath(p: string): string[] {
  return p.split('/').filter((part) => part !== '' && part !== '.');
}

export class HostFs {
  /** Absolute directory standing for the host's `/`. */
  readonly root: string;

  constructor(root = '/') {
    this.root = path.resolve(root);
  }

  /** Where host path `p` lies on this machine, without following links (for display, errors). */
  hostPath(p: string): string {
    return path.join(this.root, ...splitPath(p));
  }

  /**
   * Resolves host path `p` to the host path it names once every symlink is followed, inside the
   * root: `..` stops at the root and absolute targets restart from it. Like `realpath -m`, a
   * missing component does not stop resolution; the rest is applied lexically, so a dangling link
   * (captured snapshots hold many) still yields the path its text names. Returns null when a
   * symlink loop prevents resolution.
   */
  async resolve(p: string, options: ResolveOptions = {}): Promise<string | null> {
    const resolved: string[] = [];
    const pending = splitPath(p);
    let hops = 0;
    let missing = false;
    for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
      if (part === '..') {
        resolved.pop();
        continue;
      }
      resolved.push(part);
      if (missing) continue;
      const at = path.join(this.root, ...resolved);
      const info = await lstat(at).catch((error: unknown) => {
        if (isStateError(error)) return null;
        throw error;
      });
      if (info === null) {
        missing = true;
        continue;
      }
      if (!info.isSymbolicLink()) continue;
      hops += 1;
      if (hops > MAX_LINK_HOPS) return null;
      const target = await readlink(at, 'utf8');
      resolved.pop();
      options.onLink?.(`/${[...resolved, part].join('/')}`, target);
      if (path.isAbsolute(target)) resolved.length = 0;
      pending.unshift(...splitPath(target));
    }
    return `/${resolved.join('/')}`;
  }

  /** Location of `p` on this machine with every link followed inside the root; null on a loop. */
  private async locate(p: string): Promise<string | null> {
    // Under `/` the kernel's own lookup is the same thing, and much cheaper.
    if (this.root === '/') return p.startsWith('/') ? p : `/${p}`;
    const resolved = await this.resolve(p);
    return resolved === null ? null : this.hostPath(resolved);
  }

  /** Location of `p` itself (its parents resolved, the last component not followed). */
  private async locateEntry(p: string): Promise<string | null> {
    const parts = splitPath(p);
    const last = parts.pop();
    if (last === undefined || last === '..') return this.locate(p);
    const parent = await this.locate(`/${parts.join('/')}`);
    return parent === null ? null : path.join(parent, last);
  }

  /** Text of a file; null when it is absent or unreadable (a state, reported by the caller). */
  async readText(p: string): Promise<string | null> {
    const at = await this.locate(p);
    if (at === null) return null;
    try {
      return await readFile(at, 'utf8');
    } catch (error) {
      if (isStateError(error) || isDirectoryError(error)) return null;
      throw error;
    }
  }

  /**
   * At most `maxBytes` of a file's start, or null like readText: for files a process controls the
   * size of (`/proc/<pid>/cmdline` can be megabytes).
   */
  async readHead(p: string, maxBytes: number): Promise<string | null> {
    const at = await this.locate(p);
    if (at === null) return null;
    try {
      const handle = await open(at, 'r');
      try {
        const buffer = Buffer.alloc(maxBytes);
        const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
        return buffer.subarray(0, bytesRead).toString('utf8');
      } finally {
        await handle.close();
      }
    } catch (error) {
      if (isStateError(error) || isDirectoryError(error)) return null;
      throw error;
    }
  }

  /** Trimmed first line of a sysfs attribute, or null. */
  async readAttr(p: string): Promise<string | null> {
    const text = await this.readText(p);
    if (text === null) return null;
    return text.split('\n', 1)[0]?.trim() ?? '';
  }

  /** Target text of the symlink at `p` (not followed), or null when `p` is not a symlink. */
  async readLink(p: string): Promise<string | null> {
    const at = await this.locateEntry(p);
    if (at === null) return null;
    try {
      return await readlink(at, 'utf8');
    } catch (error) {
      if (isStateError(error)) return null;
      throw error;
    }
  }

  /** Entry names of a directory, sorted so output is stable; [] when absent. */
  async listDir(p: string): Promise<string[]> {
    const at = await this.locate(p);
    if (at === null) return [];
    try {
      return (await readdir(at)).sort();
    } catch (error) {
      if (isStateError(error)) return [];
      throw error;
    }
  }

  /** Whether `p` names an entry (a dangling symlink counts: it exists as a link). */
  async exists(p: string): Promise<boolean> {
    return (await this.entryType(p)) !== null;
  }

  /** What `p` itself is (links not followed at the last component); null when absent. */
  async entryType(p: string): Promise<EntryType | null> {
    const at = await this.locateEntry(p);
    if (at === null) return null;
    const info = await lstat(at).catch((error: unknown) => {
      if (isStateError(error)) return null;
      throw error;
    });
    if (info === null) return null;
    if (info.isSymbolicLink()) return 'symlink';
    if (info.isDirectory()) return 'directory';
    if (info.isFile()) return 'file';
    return 'other';
  }
}

function isDirectoryError(error: unknown): boolean {
  return error instanceof Error && 'code' in error && error.code === 'EISDIR';
}
