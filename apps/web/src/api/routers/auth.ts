/**
 * auth.login / logout / me. Login answers one message for an unknown user, a disabled one and a
 * wrong password (and spends the same scrypt work on each), and is rate-limited on failures per
 * client IP and per username.
 */
import { type Database, users } from '@vfio-fleet/db';
import { and, eq, isNull } from 'drizzle-orm';
import { z } from 'zod';
import { verifyAgainstDummy, verifyPassword } from '../../auth/passwords';
import {
  clearedSessionCookie,
  createSession,
  isSecureRequest,
  revokeSession,
  sessionCookie,
} from '../../auth/sessions';
import { ServerError } from '../../errors';
import { type ApiContext, createRouter, publicProcedure, viewerProcedure } from '../trpc';

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

function clientIp(ctx: ApiContext): string {
  // The socket's address, not X-Forwarded-For: a header is whatever the client wants it to be.
  // Behind a reverse proxy every client shares the proxy's address, so the per-IP limit is set
  // well above the per-username one.
  return ctx.req.socket.remoteAddress ?? 'unknown';
}

export const authRouter = createRouter({
  login: publicProcedure
    .input(
      z.object({
        username: z.string().min(1).max(64),
        password: z.string().min(1).max(1024),
      }),
    )
    .mutation(async ({ ctx, input }): Promise<Me> => {
      const { byIp, byUsername } = ctx.loginLimiters;
      const ipKey = clientIp(ctx);
      const userKey = input.username.toLowerCase();
      for (const verdict of [byIp.check(ipKey), byUsername.check(userKey)]) {
        if (!verdict.allowed) {
          ctx.res.setHeader('Retry-After', String(verdict.retryAfterSeconds));
          throw new ServerError(
            'rate-limited',
            `too many failed logins; try again in ${verdict.retryAfterSeconds} s`,
          );
        }
      }
      const user = await findActiveUser(ctx.db, input.username);
      const ok =
        user === undefined
          ? await verifyAgainstDummy(input.password)
          : await verifyPassword(input.password, user.passwordHash);
      if (user === undefined || !ok) {
        byIp.hit(ipKey);
        byUsername.hit(userKey);
        ctx.logger.info({ username: input.username, ip: ipKey }, 'login failed');
        throw new ServerError('unauthorized', LOGIN_FAILED);
      }
      byUsername.reset(userKey);
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
