/**
 * Browser sessions: a random 32-byte token in an httpOnly cookie, stored only as its sha256 in
 * `sessions` (a database dump must not log anyone in), with an expiry; logout revokes the row.
 *
 * The token is random, so a fast hash is enough (the same reasoning as agent credentials, see
 * gateway/credentials.ts) and lets the row be found by an indexed equality.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { type Database, sessions, type UserRole, users } from '@vfio-fleet/db';
import { and, eq, gt, isNull, ne } from 'drizzle-orm';
import { hashSecret } from '../gateway/credentials';

export const SESSION_COOKIE = 'vfio_fleet_session';
export const DEFAULT_SESSION_TTL_HOURS = 12;

export interface SessionUser {
  id: string;
  username: string;
  role: UserRole;
  sessionId: string;
}

export async function createSession(
  db: Database,
  userId: string,
  ttlHours: number = DEFAULT_SESSION_TTL_HOURS,
  now: Date = new Date(),
): Promise<{ token: string; expiresAt: Date }> {
  const token = randomBytes(32).toString('base64url');
  const expiresAt = new Date(now.getTime() + ttlHours * 3_600_000);
  await db.insert(sessions).values({ tokenHash: hashSecret(token), userId, expiresAt });
  return { token, expiresAt };
}

/** The user behind a session token: null when unknown, expired, revoked, or the user is disabled. */
export async function resolveSession(
  db: Database,
  token: string,
  now: Date = new Date(),
): Promise<SessionUser | null> {
  const [row] = await db
    .select({
      id: users.id,
      username: users.username,
      role: users.role,
      sessionId: sessions.id,
    })
    .from(sessions)
    .innerJoin(users, eq(users.id, sessions.userId))
    .where(
      and(
        eq(sessions.tokenHash, hashSecret(token)),
        isNull(sessions.revokedAt),
        gt(sessions.expiresAt, now),
        isNull(users.disabledAt),
      ),
    )
    .limit(1);
  return row ?? null;
}

export async function revokeSession(db: Database, sessionId: string): Promise<void> {
  await db
    .update(sessions)
    .set({ revokedAt: new Date() })
    .where(and(eq(sessions.id, sessionId), isNull(sessions.revokedAt)));
}

/** Every open session of a user (disabled, or the password changed). */
export async function revokeUserSessions(
  db: Database,
  userId: string,
  exceptSessionId?: string,
): Promise<void> {
  const open = and(eq(sessions.userId, userId), isNull(sessions.revokedAt));
  await db
    .update(sessions)
    .set({ revokedAt: new Date() })
    .where(exceptSessionId === undefined ? open : and(open, ne(sessions.id, exceptSessionId)));
}

/** The session token from the request's Cookie header, if any. */
export function readSessionToken(req: IncomingMessage): string | null {
  const header = req.headers.cookie;
  if (header === undefined) return null;
  for (const part of header.split(';')) {
    const eqAt = part.indexOf('=');
    if (eqAt < 0) continue;
    if (part.slice(0, eqAt).trim() !== SESSION_COOKIE) continue;
    const value = part.slice(eqAt + 1).trim();
    // Our tokens are base64url; anything else is not ours and is ignored rather than hashed.
    return /^[A-Za-z0-9_-]{20,128}$/.test(value) ? value : null;
  }
  return null;
}

/**
 * Whether the browser reached us over https: directly (a TLS socket) or through a proxy that says
 * so. Then the cookie gets `Secure`; over plain http (a lab, tests) it cannot, or it would be lost.
 */
export function isSecureRequest(req: IncomingMessage): boolean {
  if ((req.socket as { encrypted?: boolean }).encrypted === true) return true;
  const forwarded = req.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
  return first?.toLowerCase() === 'https';
}

export function sessionCookie(token: string, expiresAt: Date, secure: boolean): string {
  const maxAge = Math.max(0, Math.round((expiresAt.getTime() - Date.now()) / 1000));
  return [
    `${SESSION_COOKIE}=${token}`,
    'Path=/',
    'HttpOnly',
    'SameSite=Lax',
    `Max-Age=${maxAge}`,
    `Expires=${expiresAt.toUTCString()}`,
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}

export function clearedSessionCookie(secure: boolean): string {
  return [
    `${SESSION_COOKIE}=`,
    'Path=/',
    'HttpOnly',
    'SameSite=Lax',
    'Max-Age=0',
    'Expires=Thu, 01 Jan 1970 00:00:00 GMT',
    ...(secure ? ['Secure'] : []),
  ].join('; ');
}
