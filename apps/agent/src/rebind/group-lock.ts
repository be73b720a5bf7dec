/**
 * One rebind at a time per IOMMU group. Two jobs interleaving their sysfs writes on the same group
 * would each roll back to a state the other had already changed, so a job holds its group for
 * everything from planning to the final re-read.
 *
 * Two layers: a promise chain per group inside this process (the daemon runs jobs concurrently),
 * and an exclusive lock file across processes (a local `bind` while the daemon runs). The file is
 * created with O_EXCL ('wx') and holds the owner's pid, so a lock left by a crashed agent is
 * recognised (its pid is gone) and taken over instead of blocking the group forever.
 */
import { randomUUID } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { ensureDir, errnoOf, processAlive } from './state-files';

const POLL_MS = 25;
/** A lock file without a pid yet is being written by its creator; only an old one is abandoned. */
const HALF_WRITTEN_MS = 2000;

export class GroupBusyError extends Error {
  override readonly name = 'GroupBusyError';
}

export interface GroupLease {
  release(): Promise<void>;
}

/**
 * Queues per lock directory, shared by every GroupLocks of this process: two executors in one
 * agent (the daemon's and the persisted-bindings one) must queue on the same chain, since the
 * lock file cannot tell them apart (same pid).
 */
const TAILS_BY_DIR = new Map<string, Map<string, Promise<void>>>();

export class GroupLocks {
  private readonly tails: Map<string, Promise<void>>;

  constructor(private readonly lockDir: string) {
    const key = path.resolve(lockDir);
    const known = TAILS_BY_DIR.get(key);
    this.tails = known ?? new Map<string, Promise<void>>();
    if (known === undefined) TAILS_BY_DIR.set(key, this.tails);
  }

  /** Waits up to `waitMs` for the group; throws GroupBusyError when it stays taken. */
  async acquire(key: string, waitMs: number): Promise<GroupLease> {
    const deadline = Date.now() + waitMs;
    const previous = this.tails.get(key) ?? Promise.resolve();
    let releaseLocal = (): void => undefined;
    const mine = new Promise<void>((resolve) => {
      releaseLocal = resolve;
    });
    // Queue behind whoever holds or waits for the group; a waiter that gives up still passes the
    // turn on only after its predecessor is done, so the chain never lets two holders overlap.
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    const cleanup = (): void => {
      releaseLocal();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };

    const gotLocal = await waitFor(previous, deadline - Date.now());
    if (!gotLocal) {
      // Resolve our link only once the predecessor finishes, keeping the order for later waiters.
      void previous.then(cleanup);
      throw new GroupBusyError(`another job in this agent holds ${key}`);
    }
    const file = path.join(this.lockDir, `${key}.lock`);
    try {
      await this.lockFile(file, deadline);
    } catch (error) {
      cleanup();
      throw error;
    }
    return {
      release: async () => {
        await unlink(file).catch(() => undefined);
        cleanup();
      },
    };
  }

  private async lockFile(file: string, deadline: number): Promise<void> {
    await ensureDir(this.lockDir);
    for (;;) {
      try {
        const handle = await open(file, 'wx', 0o600);
        try {
          await handle.writeFile(`${process.pid}\n`, 'utf8');
        } finally {
          await handle.close();
        }
        return;
      } catch (error) {
        if (errnoOf(error) !== 'EEXIST') throw error;
      }
      const owner = await readPid(file);
      if (owner === null ? await olderThan(file, HALF_WRITTEN_MS) : isStale(owner)) {
        await takeOverStale(file);
        continue;
      }
      if (Date.now() >= deadline) {
        throw new GroupBusyError(`process ${owner ?? '?'} holds ${path.basename(file)}`);
      }
      await sleep(POLL_MS);
    }
  }
}

/**
 * Moves a stale lock aside atomically (only one contender's rename succeeds), then checks that
 * what it moved really was stale: if another agent replaced it with a live lock in between, that
 * lock is put back (link fails when yet another one was created meanwhile, which is also fine).
 */
async function takeOverStale(file: string): Promise<void> {
  const aside = `${file}.stale-${process.pid}-${randomUUID()}`;
  try {
    await rename(file, aside);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return;
    throw error;
  }
  const owner = await readPid(aside);
  if (owner !== null && !isStale(owner)) {
    await link(aside, file).catch(() => undefined);
  }
  await unlink(aside).catch(() => undefined);
}

// Our own pid in a file can only be a previous agent's (pid reuse, e.g. pid 1 in a container):
// inside this process the promise chain already serialises holders.
function isStale(owner: number): boolean {
  return owner === process.pid || !processAlive(owner);
}

async function olderThan(file: string, ms: number): Promise<boolean> {
  const info = await stat(file).catch(() => null);
  return info !== null && Date.now() - info.mtimeMs > ms;
}

async function readPid(file: string): Promise<number | null> {
  const text = await readFile(file, 'utf8').catch(() => null);
  if (text === null) return null;
  const trimmed = text.trim();
  return /^\d+$/.test(trimmed) ? Number(trimmed) : null;
}

async function waitFor(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
