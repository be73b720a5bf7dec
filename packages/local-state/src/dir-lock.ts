/**
 * One process per directory: a lock file inside it (see lock-file.ts), and an error that names
 * the directory, the process that holds it, and what to do.
 */
import path from 'node:path';
import {
  describeOwner,
  type HeldLock,
  type LockOptions,
  type LockOwner,
  tryLock,
} from './lock-file';
import type { Liveness } from './process-identity';

export interface DirectoryLockOptions extends Pick<LockOptions, 'info' | 'local'> {
  /** The lock file's name inside the directory. */
  name: string;
  /** What the directory is, for the error: "the PGlite database". */
  purpose: string;
  /** What the operator can do, for the error: "stop that server first, or …". */
  hint: string;
}

export class DirectoryLockedError extends Error {
  override readonly name = 'DirectoryLockedError';

  constructor(
    readonly dir: string,
    readonly file: string,
    readonly owner: LockOwner | null,
    readonly liveness: Liveness,
    message: string,
  ) {
    super(message);
  }
}

/** Takes `<dir>/<name>`, or throws a DirectoryLockedError when a live process holds it. */
export async function lockDirectory(dir: string, options: DirectoryLockOptions): Promise<HeldLock> {
  const file = path.join(dir, options.name);
  const attempt = await tryLock(file, options);
  if (attempt.kind === 'acquired') return attempt.lock;
  const { owner, liveness } = attempt;
  const unsure =
    liveness === 'unknown'
      ? ` (it cannot be checked from this host: if nothing runs there any more, remove ${file})`
      : '';
  throw new DirectoryLockedError(
    dir,
    file,
    owner,
    liveness,
    `${options.purpose} in ${dir} is in use by ${describeOwner(owner, liveness)}${unsure}: ${options.hint}`,
  );
}
