/**
 * Password hashing with node:crypto's scrypt: a per-user random salt, and the cost parameters
 * stored in the hash string itself (`scrypt$N$r$p$salt$hash`, base64url), so the cost can be
 * raised later without invalidating existing hashes — each is verified with its own parameters.
 */
import { randomBytes, type ScryptOptions, scrypt, timingSafeEqual } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { ServerError } from '../errors';
import { Gate, GateFullError } from '../ops/gate';

/** N = 2^15, r = 8: about 32 MiB and tens of milliseconds per hash, OWASP's scrypt baseline. */
const DEFAULT_COST = { N: 2 ** 15, r: 8, p: 1 } as const;
const KEY_LENGTH = 32;
const SALT_BYTES = 16;
/** A stored hash must not make verification allocate without bound (N and r set memory). */
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;

/**
 * scrypt runs on libuv's threadpool (4 threads by default), which fs, dns.lookup and the rest of
 * crypto share, and keeps a core busy: a flood of logins queued there made every file read wait
 * behind it. Server-wide, at most half the cores (at most 2, half the pool) hash at once; a few
 * more wait their turn, and beyond that a caller is told the server is busy rather than queued
 * without end.
 */
const HASH_CONCURRENCY = Math.min(2, Math.max(1, Math.floor(availableParallelism() / 2)));
const HASH_MAX_WAITING = 16;
const hashGate = new Gate(HASH_CONCURRENCY, HASH_MAX_WAITING);

async function derive(
  password: string,
  salt: Buffer,
  cost: { N: number; r: number; p: number },
): Promise<Buffer> {
  const options: ScryptOptions = { ...cost, maxmem: 256 * cost.N * cost.r + 16 * 1024 * 1024 };
  let release: () => void;
  try {
    release = await hashGate.acquire();
  } catch (error) {
    if (!(error instanceof GateFullError)) throw error;
    throw new ServerError(
      'rate-limited',
      'the server is busy checking other passwords; try again in a few seconds',
      { cause: error },
    );
  }
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      scrypt(password.normalize('NFKC'), salt, KEY_LENGTH, options, (error, key) =>
        error ? reject(error) : resolve(key),
      );
    });
  } finally {
    release();
  }
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, DEFAULT_COST);
  const { N, r, p } = DEFAULT_COST;
  return `scrypt$${N}$${r}$${p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

interface ParsedHash {
  cost: { N: number; r: number; p: number };
  salt: Buffer;
  key: Buffer;
}

function parseHash(stored: string): ParsedHash | null {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null;
  const [N, r, p] = parts
    .slice(1, 4)
    .map((part) => (/^\d+$/.test(part) ? Number(part) : Number.NaN));
  if (N === undefined || r === undefined || p === undefined) return null;
  // N must be a power of two above 1 (scrypt's own rule); the bounds keep a forged row from
  // turning a login into a memory exhaustion.
  if (
    !(N > 1 && N <= MAX_N && (N & (N - 1)) === 0 && r >= 1 && r <= MAX_R && p >= 1 && p <= MAX_P)
  ) {
    return null;
  }
  const salt = Buffer.from(parts[4] ?? '', 'base64url');
  const key = Buffer.from(parts[5] ?? '', 'base64url');
  if (salt.length === 0 || key.length === 0) return null;
  return { cost: { N, r, p }, salt, key };
}

/** Whether `password` matches `stored`; a malformed stored hash matches nothing. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseHash(stored);
  if (parsed === null) return false;
  const key = await derive(password, parsed.salt, parsed.cost);
  return key.length === parsed.key.length && timingSafeEqual(key, parsed.key);
}

let dummyHash: Promise<string> | null = null;

/**
 * Spends the same scrypt work as a real verification, for a login whose username does not exist:
 * the response time must not tell a stranger which usernames are real.
 */
export async function verifyAgainstDummy(password: string): Promise<false> {
  dummyHash ??= hashPassword(randomBytes(16).toString('hex')).catch((error: unknown) => {
    // A busy server refused it: the next unknown-user login makes it again.
    dummyHash = null;
    throw error;
  });
  await verifyPassword(password, await dummyHash);
  return false;
}
