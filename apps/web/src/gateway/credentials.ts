/**
 * Enrollment tokens and agent credentials: issued here, stored only as hashes.
 *
 * Both are 32 random bytes, so a plain sha256 is enough: scrypt's cost exists to slow down guessing
 * low-entropy passwords, and 256 random bits cannot be guessed however fast the hash is. A fast
 * hash also lets the token be looked up by its hash (an indexed equality) instead of trying every
 * row. Comparisons of secrets use timingSafeEqual so response times leak nothing about a prefix.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { agentCredentials, type Database, enrollmentTokens } from '@vfio-fleet/db';
import { and, eq, isNull, sql } from 'drizzle-orm';

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented secret with a stored hash. */
export function secretMatches(secret: string, storedHash: string): boolean {
  const presented = Buffer.from(hashSecret(secret), 'hex');
  const stored = Buffer.from(storedHash, 'hex');
  return presented.length === stored.length && timingSafeEqual(presented, stored);
}

/** A fresh random secret in the wire's secret alphabet (base64url, 43 characters). */
export function newSecret(): string {
  // A token goes on a command line (`--token TOKEN`), where one starting with '-' reads as an
  // option (node's parseArgs refuses it as ambiguous): drawn again until it starts with a letter
  // or digit, which costs well under one bit of its 256.
  for (;;) {
    const secret = randomBytes(32).toString('base64url');
    if (/^[A-Za-z0-9]/.test(secret)) return secret;
  }
}

export interface EnrollmentTokenOptions {
  label?: string | null;
  ttlSeconds: number;
  /** Null or absent: any number of enrollments until it expires. */
  maxUses?: number | null;
}

/** Issues an enrollment token; the token itself is returned once and never stored. */
export async function createEnrollmentToken(
  db: Database,
  options: EnrollmentTokenOptions,
): Promise<{ token: string; id: string }> {
  const token = newSecret();
  const [row] = await db
    .insert(enrollmentTokens)
    .values({
      tokenHash: hashSecret(token),
      label: options.label ?? null,
      expiresAt: new Date(Date.now() + options.ttlSeconds * 1000),
      maxUses: options.maxUses ?? null,
    })
    .returning({ id: enrollmentTokens.id });
  if (row === undefined) throw new Error('inserting the enrollment token returned no row');
  return { token, id: row.id };
}

/** A token spent at enrollment: `counted` says whether its use was recorded in the same transaction. */
export type SpentToken = { id: string; counted: boolean } | null;

/**
 * Spends one use of a token. A token with a use limit is spent atomically, in the enrollment
 * transaction: the UPDATE's WHERE re-checks expiry, revocation and the count, so two agents racing
 * for the last use cannot both enroll. A token without a limit (the one a rollout pastes into a
 * thousand hosts) is only checked: counting its uses in the same transaction would make every
 * enrollment of the fleet wait for the one before it to commit (a row lock held across a WAL
 * flush: ~200 enrollments a second, measured), so its count is added afterwards in batches
 * (TokenUseCounter). Returns null when the token is unknown, expired, revoked or used up.
 */
export async function spendEnrollmentToken(
  db: Database,
  token: string,
  now: Date,
): Promise<SpentToken> {
  const [row] = await db
    .select({
      id: enrollmentTokens.id,
      maxUses: enrollmentTokens.maxUses,
      expiresAt: enrollmentTokens.expiresAt,
      revokedAt: enrollmentTokens.revokedAt,
    })
    .from(enrollmentTokens)
    .where(eq(enrollmentTokens.tokenHash, hashSecret(token)));
  if (row === undefined || row.revokedAt !== null || row.expiresAt <= now) return null;
  if (row.maxUses === null) return { id: row.id, counted: false };
  const spent = await db
    .update(enrollmentTokens)
    .set({ uses: sql`${enrollmentTokens.uses} + 1` })
    .where(
      and(
        eq(enrollmentTokens.id, row.id),
        isNull(enrollmentTokens.revokedAt),
        sql`${enrollmentTokens.expiresAt} > ${now.toISOString()}`,
        sql`${enrollmentTokens.uses} < ${enrollmentTokens.maxUses}`,
      ),
    )
    .returning({ id: enrollmentTokens.id });
  return spent.length === 1 ? { id: row.id, counted: true } : null;
}

/**
 * Uses of unlimited tokens, added to enrollment_tokens.uses once per interval and token in one
 * UPDATE each. A crash loses at most one interval of counts; the count of an unlimited token is
 * only shown, never enforced.
 */
export class TokenUseCounter {
  private readonly pending = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly onError: (error: unknown) => void,
    private readonly intervalMs = 1_000,
  ) {}

  record(tokenId: string): void {
    this.pending.set(tokenId, (this.pending.get(tokenId) ?? 0) + 1);
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush().catch(this.onError);
      }, this.intervalMs);
      this.timer.unref();
    }
  }

  /** Writes what is pending (serialized with a flush already running). */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const batch = [...this.pending];
    this.pending.clear();
    this.flushing = this.flushing
      .catch(() => undefined)
      .then(async () => {
        for (const [id, count] of batch) {
          await this.db
            .update(enrollmentTokens)
            .set({ uses: sql`${enrollmentTokens.uses} + ${count}` })
            .where(eq(enrollmentTokens.id, id));
        }
      });
    return this.flushing;
  }
}

/** Creates a credential for a new agent; the secret is returned once, only its hash is stored. */
export async function issueCredential(
  db: Database,
  hostId: string,
  agentId: string = randomUUID(),
): Promise<{ agentId: string; secret: string }> {
  const secret = newSecret();
  await db.insert(agentCredentials).values({ agentId, hostId, secretHash: hashSecret(secret) });
  return { agentId, secret };
}

/** Registered by each running gateway, so a revocation can close the agent's socket at once. */
type Disconnect = (agentId: string, reason: string) => void;
const liveGateways = new Map<Database, Set<Disconnect>>();

export function registerDisconnect(db: Database, disconnect: Disconnect): () => void {
  let set = liveGateways.get(db);
  if (set === undefined) {
    set = new Set();
    liveGateways.set(db, set);
  }
  set.add(disconnect);
  return () => {
    set.delete(disconnect);
  };
}

/**
 * Revokes an agent's credential and disconnects the agent if a gateway of this process holds its
 * socket. Returns whether a credential was revoked (false: unknown or already revoked).
 */
export async function revokeCredential(db: Database, agentId: string): Promise<boolean> {
  const revoked = await db
    .update(agentCredentials)
    .set({ revokedAt: new Date() })
    .where(and(eq(agentCredentials.agentId, agentId), isNull(agentCredentials.revokedAt)))
    .returning({ agentId: agentCredentials.agentId });
  for (const disconnect of liveGateways.get(db) ?? []) {
    disconnect(agentId, 'the credential was revoked');
  }
  return revoked.length === 1;
}
