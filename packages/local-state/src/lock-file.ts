/**
 * An exclusive lock file: created with O_EXCL, holding its owner's identity (pid, start time, host,
 * boot), removed when released. Node has no flock(), and a lock that outlives a `kill -9` must
 * not block the next start: a file whose owner is provably gone (the pid is free, or now belongs
 * to a process that started at another time, or the host rebooted) is taken over. Why not a
 * library or an OS lock: docs/decisions/pid-lock-files.md.
 */
import { randomUUID } from 'node:crypto';
import { link, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import {
  errnoOf,
  identityOf,
  type Liveness,
  liveness,
  type ProcessIdentity,
} from './process-identity';

/** A lock file without content yet is being written by its creator; only an old one is abandoned. */
const HALF_WRITTEN_MS = 2_000;

const infoSchema = z.record(z.string(), z.union([z.string(), z.number(), z.null()]));
export type LockInfo = z.infer<typeof infoSchema>;

const ownerSchema = z.object({
  pid: z.number().int().positive(),
  startTime: z.string().nullable(),
  hostname: z.string(),
  bootId: z.string().nullable(),
  acquiredAt: z.string(),
  /** What the owner wants others to know (e.g. a local agent's parent server). */
  info: infoSchema,
});
export type LockOwner = z.infer<typeof ownerSchema>;

export interface HeldLock {
  readonly file: string;
  readonly owner: LockOwner;
  /** Removes the file, if it is still this lock's. */
  release(): Promise<void>;
}

export type LockAttempt =
  | { kind: 'acquired'; lock: HeldLock }
  /** `owner` null: the file is being created by another process right now. */
  | { kind: 'held'; owner: LockOwner | null; liveness: Liveness };

export interface LockOptions {
  info?: LockInfo;
  /** The file is on a disk of this machine only: a hostname change does not make it foreign. */
  local?: boolean;
  /**
   * A file naming this very process counts as stale: for callers that serialise their own
   * holders in memory, so such a file can only be one they failed to remove.
   */
  ownProcessIsStale?: boolean;
}

/** One try (with takeovers of stale files): the lock, or who holds it. */
export async function tryLock(file: string, options: LockOptions = {}): Promise<LockAttempt> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const owner: LockOwner = {
    ...identityOf(),
    acquiredAt: new Date().toISOString(),
    info: options.info ?? {},
  };
  const text = `${JSON.stringify(owner)}\n`;
  // A few rounds: each lost race (a file released or taken over meanwhile) is one more round.
  for (let round = 0; round < 5; round++) {
    try {
      const handle = await open(file, 'wx', 0o600);
      try {
        await handle.writeFile(text, 'utf8');
      } finally {
        await handle.close();
      }
      return { kind: 'acquired', lock: heldLock(file, owner, text) };
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw error;
    }
    const found = await readLockFile(file);
    if (found === null) continue;
    const state = await ownerLiveness(file, found, options);
    if (state !== 'dead') return { kind: 'held', owner: found.owner, liveness: state };
    await takeOverStale(file, found.text);
  }
  const found = await readLockFile(file);
  return {
    kind: 'held',
    owner: found?.owner ?? null,
    liveness: found === null ? 'unknown' : await ownerLiveness(file, found, options),
  };
}

/** Who holds `file` and whether they still run; null when there is no such file. */
export async function readLock(
  file: string,
  options: Pick<LockOptions, 'local'> = {},
): Promise<{ owner: LockOwner | null; liveness: Liveness } | null> {
  const found = await readLockFile(file);
  if (found === null) return null;
  return { owner: found.owner, liveness: await ownerLiveness(file, found, options) };
}

interface FoundLock {
  text: string;
  /** Null: no owner in it (empty or damaged). */
  owner: LockOwner | null;
}

async function readLockFile(file: string): Promise<FoundLock | null> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return null;
    throw error;
  }
  return { text, owner: parseOwner(text) };
}

/** The JSON this module writes, or a bare pid line (what the agent's group locks used to hold). */
function parseOwner(text: string): LockOwner | null {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) {
    const self = identityOf();
    return {
      ...self,
      pid: Number(trimmed),
      startTime: null,
      bootId: null,
      acquiredAt: '',
      info: {},
    };
  }
  let json: unknown;
  try {
    json = JSON.parse(trimmed);
  } catch {
    return null;
  }
  const parsed = ownerSchema.safeParse(json);
  return parsed.success ? parsed.data : null;
}

async function ownerLiveness(
  file: string,
  found: FoundLock,
  options: LockOptions,
): Promise<Liveness> {
  const { owner } = found;
  if (owner === null) {
    // Being written now, or damaged (a crash between create and write): only the latter is old.
    const info = await stat(file).catch(() => null);
    return info !== null && Date.now() - info.mtimeMs > HALF_WRITTEN_MS ? 'dead' : 'alive';
  }
  const self = identityOf();
  if (
    options.ownProcessIsStale === true &&
    owner.pid === self.pid &&
    (owner.startTime === null || owner.startTime === self.startTime)
  ) {
    return 'dead';
  }
  return liveness(owner, { local: options.local });
}

/**
 * Moves a stale file aside atomically (only one contender's rename succeeds), then checks that
 * what it moved is the file it judged stale: if another process replaced it with a live lock in
 * between, that lock is put back (link fails when yet another was created meanwhile, also fine).
 */
async function takeOverStale(file: string, staleText: string): Promise<void> {
  const aside = `${file}.stale-${process.pid}-${randomUUID()}`;
  try {
    await rename(file, aside);
  } catch (error) {
    if (errnoOf(error) === 'ENOENT') return;
    throw error;
  }
  const moved = await readFile(aside, 'utf8').catch(() => null);
  if (moved !== null && moved !== staleText) await link(aside, file).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}

function heldLock(file: string, owner: LockOwner, text: string): HeldLock {
  let released = false;
  return {
    file,
    owner,
    async release() {
      if (released) return;
      released = true;
      const now = await readFile(file, 'utf8').catch(() => null);
      if (now === text) await unlink(file).catch(() => undefined);
    },
  };
}

/** "pid 123 (since …)", and where it runs when that is not this host. */
export function describeOwner(owner: LockOwner | null, state: Liveness): string {
  if (owner === null) return 'another process (it is creating the lock file right now)';
  const since = owner.acquiredAt === '' ? '' : `, since ${owner.acquiredAt}`;
  return state === 'unknown'
    ? `pid ${owner.pid} on host ${owner.hostname}${since}`
    : `pid ${owner.pid}${since}`;
}

export type { ProcessIdentity };
