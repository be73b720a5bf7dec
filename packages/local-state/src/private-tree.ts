/**
 * Making a directory tree private to its owner: no group or other bits on anything in it (0755
 * directories become 0700, 0666 files 0600). Symbolic links are not followed (their own mode means
 * nothing on Linux, and what they point at is not ours to change).
 */
import { chmod, lstat, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf } from './process-identity';

const GROUP_AND_OTHER = 0o077;

/** Creates `dir` (0700) if needed, and strips group/other bits below it; returns how many it fixed. */
export async function makePrivate(dir: string): Promise<number> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return fix(dir);
}

async function fix(entry: string): Promise<number> {
  let info: Awaited<ReturnType<typeof lstat>>;
  try {
    info = await lstat(entry);
  } catch (error) {
    // Removed while we walked (a temporary file of a running process): nothing to fix.
    if (errnoOf(error) === 'ENOENT') return 0;
    throw error;
  }
  if (info.isSymbolicLink()) return 0;
  let fixed = 0;
  if ((info.mode & GROUP_AND_OTHER) !== 0) {
    try {
      await chmod(entry, info.mode & 0o7700 & ~GROUP_AND_OTHER);
    } catch (error) {
      throw new Error(`cannot make ${entry} private (chmod): ${errnoOf(error) ?? String(error)}`, {
        cause: error,
      });
    }
    fixed += 1;
  }
  if (info.isDirectory()) {
    let names: string[];
    try {
      names = await readdir(entry);
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return fixed;
      throw error;
    }
    for (const name of names) fixed += await fix(path.join(entry, name));
  }
  return fixed;
}
