/**
 * The PGlite data directory as something only one process, and only its owner, may touch.
 *
 * - One opener: PGlite does not check PostgreSQL's postmaster.pid, and two processes on one
 *   directory each see only their own writes (one side's are lost at the next start). A lock file
 *   (@vfio-fleet/local-state) refuses the second, naming the directory and the holder's pid; one
 *   left by a process killed with SIGKILL is taken over.
 * - Private: PGlite's filesystem layer creates every file 0666 (it chmods explicitly, so the
 *   process umask does not narrow it) and directories 0755; the database holds password hashes and
 *   sessions, and whoever can write it can make themselves admin. The directory is made 0700 with
 *   0600 files before PGlite opens it (an existing one is fixed, and said so), again after PGlite
 *   created its files, and at close; a file PGlite creates while running is out of reach of other
 *   users anyway, inside the 0700 directory.
 */
import { type HeldLock, lockDirectory, makePrivate } from '@vfio-fleet/local-state';

export const DATA_DIR_LOCK_FILE = 'vfio-fleet.lock';

export interface OpenDataDir {
  /** Makes what PGlite created private (call once it has opened the directory). */
  settle(): Promise<void>;
  /** Makes the directory private once more and releases the lock. */
  close(): Promise<void>;
}

/** Locks `location` and makes it private; `notice` hears what had to be fixed. */
export async function openDataDir(
  location: string,
  notice: (message: string) => void,
): Promise<OpenDataDir> {
  const lock: HeldLock = await lockDirectory(location, {
    name: DATA_DIR_LOCK_FILE,
    purpose: 'the PGlite database',
    hint: 'stop that process first (two processes on one PGlite directory each see only their own writes, and one side loses them), or set VFIO_FLEET_DATA_DIR to another directory',
  });
  try {
    const fixed = await makePrivate(location);
    if (fixed > 0) {
      notice(
        `fixed modes of ${fixed} files in ${location}: other users could read or write them (now 0700 directories, 0600 files)`,
      );
    }
  } catch (error) {
    await lock.release();
    throw error;
  }
  return {
    async settle() {
      await makePrivate(location);
    },
    async close() {
      try {
        await makePrivate(location);
      } finally {
        await lock.release();
      }
    },
  };
}
