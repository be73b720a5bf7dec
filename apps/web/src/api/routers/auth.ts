/**
 * auth.login / logout / me. Login answers one message for an unknown user, a disabled one and a
 * wrong password (and spends the same scrypt work on each), is rate-limited on failures per
 * client IP and per username (each attempt counted before it is hashed: auth/login-attempts.ts),
 * and is never part of a batch.
 */
import { type Database, users } from '@vfio-fleet/db';
import { and, eq, isNull } from 'drizzle-orm';
import { z } from 'zod';
import type { LoginAttempt } from '../../auth/login-attempts';
import { verifyAgainstDummy, verifyPassword } from '../../auth/passwords';
import {
  clearedSessionCookie,
  createSession,
  isSecureRequest,
  revokeSession,
  sessionCookie,
} from '../../auth/sessions';
import { ServerError } from '../../errors';
import { type ApiContext, alone, createRouter, publicProcedure, viewerProcedure } from '../trpc';

export const LOGIN_FAILED = 'wrong username or password';

export interface Me {
  id: string;
  username: string;
  role: 'viewer' | 'operator' | 'admin';
}

async function findActiveUser(db: Database, username: string) {
  const [user] = await db
    .select()
    .from(users)
    .where(and(eq(users.username, username), isNull(users.disabledAt)))
    .limit(1);
  return user;
}

export function clientIp(ctx: ApiContext): string {
  // The socket's address, not X-Forwarded-For: a header is whatever the client wants it to be.
  // Behind a reverse proxy every client shares the proxy's address, so the per-IP limit is set
  // well above the per-username one.
  return ctx.req.socket.remoteAddress ?? 'unknown';
}

/** Counts a password check against the limits before it is hashed, or refuses it (429). */
export function admitAttempt(ctx: ApiContext, ip: string, username: string): LoginAttempt {
  const admission = ctx.loginAttempts.begin(ip, username);
  if (admission.allowed) return admission.attempt;
  ctx.res.setHeader('Retry-After', String(admission.retryAfterSeconds));
  throw new ServerError('rate-limited', admission.message);
}

export const authRouter = createRouter({
  login: publicProcedure
    .use(alone)
    .input(
      z.object({
        username: z.string().min(1).max(64),
        password: z.string().min(1).max(1024),
      }),
    )
    .mutation(async ({ ctx, input }): Promise<Me> => {
      const ip = clientIp(ctx);
      const attempt = admitAttempt(ctx, ip, input.username);
      let user: Awaited<ReturnType<typeof findActiveUser>>;
      let ok: boolean;
      try {
        user = await findActiveUser(ctx.db, input.username);
        ok =
          user === undefined
            ? await verifyAgainstDummy(input.password)
            : await verifyPassword(input.password, user.passwordHash);
      } catch (error) {
        attempt.abandoned();
        throw error;
      }
      if (user === undefined || !ok) {
        attempt.failed();
        ctx.logger.info({ username: input.username, ip }, 'login failed');
        throw new ServerError('unauthorized', LOGIN_FAILED);
      }
      attempt.succeeded();
      const { token, expiresAt } = await createSession(ctx.db, user.id, ctx.sessionTtlHours);
      ctx.res.setHeader('Set-Cookie', sessionCookie(token, expiresAt, isSecureRequest(ctx.req)));
      ctx.logger.info({ username: user.username }, 'logged in');
      return { id: user.id, username: user.username, role: user.role };
    }),

  logout: viewerProcedure.mutation(async ({ ctx }) => {
    await revokeSession(ctx.db, ctx.user.sessionId);
    ctx.res.setHeader('Set-Cookie', clearedSessionCookie(isSecureRequest(ctx.req)));
    return { ok: true as const };
  }),

  me: viewerProcedure.query(({ ctx }): Me => {
    const { id, username, role } = ctx.user;
    return { id, username, role };
  }),
});
