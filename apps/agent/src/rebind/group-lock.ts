/**
 * One rebind at a time per IOMMU group. Two jobs interleaving their sysfs writes on the same group
 * would each roll back to a state the other had already changed, so a job holds its group for
 * everything from planning to the final re-read.
 *
 * Two layers: a promise chain per group inside this process (the daemon runs jobs concurrently),
 * and an exclusive lock file across processes (a local `bind` while the daemon runs): the shared
 * pid lock file of @vfio-fleet/local-state, so a lock left by a crashed agent is recognised (its
 * process is gone) and taken over instead of blocking the group forever.
 */
import path from 'node:path';
import { type HeldLock, tryLock } from '@vfio-fleet/local-state';

const POLL_MS = 25;

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
    let held: HeldLock;
    try {
      held = await lockFile(file, deadline);
    } catch (error) {
      cleanup();
      throw error;
    }
    return {
      release: async () => {
        await held.release();
        cleanup();
      },
    };
  }
}

async function lockFile(file: string, deadline: number): Promise<HeldLock> {
  for (;;) {
    // This process's own name in a file can only be left over: the promise chain above already
    // serialises holders inside it. The state dir is on this host's own disk.
    const attempt = await tryLock(file, { local: true, ownProcessIsStale: true });
    if (attempt.kind === 'acquired') return attempt.lock;
    if (Date.now() >= deadline) {
      throw new GroupBusyError(`process ${attempt.owner?.pid ?? '?'} holds ${path.basename(file)}`);
    }
    await sleep(POLL_MS);
  }
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
