/**
 * Admin-only: enrollment tokens, agent revocation, users. Every change is one transaction with its
 * audit_log row, so the trail cannot miss an action that happened (or record one that did not).
 */
import { helloMessageSchema } from '@vfio-fleet/core';
import {
  agentCredentials,
  type Database,
  enrollmentTokens,
  type HostState,
  hosts,
  USER_ROLES,
  type UserRole,
  users,
} from '@vfio-fleet/db';
import { and, asc, eq, gt, isNotNull, isNull, type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { recordAudit } from '../../audit/audit-log';
import { hashPassword, verifyPassword } from '../../auth/passwords';
import { revokeUserSessions } from '../../auth/sessions';
import { agentCommand, installCommands } from '../../downloads/install-commands';
import { ServerError } from '../../errors';
import { decodeCursor, encodeCursor } from '../../fleet/cursor';
import { hashSecret, newSecret, revokeCredential } from '../../gateway/credentials';
import { cursorInput, limitInput, uuidInput } from '../inputs';
import { adminProcedure, alone, createRouter, viewerProcedure } from '../trpc';
import { admitAttempt, clientIp } from './auth';

function auditBy(user: { id: string; username: string }) {
  return { userId: user.id, username: user.username };
}

// --- enrollment tokens --------------------------------------------------------------------------

export interface TokenView {
  id: string;
  label: string | null;
  createdAt: string;
  createdBy: string | null;
  expiresAt: string;
  revokedAt: string | null;
  uses: number;
  maxUses: number | null;
  state: 'active' | 'expired' | 'revoked' | 'used-up';
}

function tokenState(row: typeof enrollmentTokens.$inferSelect, now: Date): TokenView['state'] {
  if (row.revokedAt !== null) return 'revoked';
  if (row.expiresAt <= now) return 'expired';
  if (row.maxUses !== null && row.uses >= row.maxUses) return 'used-up';
  return 'active';
}

/** created_at as exact text (microseconds): a Date cursor would skip rows within a millisecond. */
const tokenCreatedKey = sql<string>`to_char(${enrollmentTokens.createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

export const tokensRouter = createRouter({
  create: adminProcedure
    .input(
      z.object({
        label: z.string().max(200).optional(),
        ttlHours: z
          .number()
          .positive()
          .max(24 * 365),
        maxUses: z.number().int().min(1).max(1_000_000).optional(),
        /**
         * Labels the enrolled host should get: they travel in the command line as `--label k=v`
         * (the agent sends them in every hello), not with the token. Validated by the protocol's own
         * schema, so a command we print is never one the agent refuses.
         */
        labels: helloMessageSchema.shape.labels.optional(),
        /** The commands start the agent with `--allow-rebind`: the console may rebind the host. */
        allowRebind: z.boolean().default(false),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const server = ctx.serverUrl(ctx.req);
      const labels = input.labels ?? {};
      const release = (await ctx.downloads?.release()) ?? null;
      const token = newSecret();
      const expiresAt = new Date(Date.now() + input.ttlHours * 3_600_000);
      const row = await ctx.db.transaction(async (tx) => {
        const [inserted] = await tx
          .insert(enrollmentTokens)
          .values({
            tokenHash: hashSecret(token),
            label: input.label ?? null,
            createdBy: ctx.user.id,
            expiresAt,
            maxUses: input.maxUses ?? null,
          })
          .returning();
        if (inserted === undefined)
          throw new Error('inserting the enrollment token returned no row');
        await recordAudit(tx, {
          ...auditBy(ctx.user),
          action: 'token-created',
          detail: {
            tokenId: inserted.id,
            label: inserted.label,
            expiresAt: expiresAt.toISOString(),
            maxUses: inserted.maxUses,
            labels,
            allowRebind: input.allowRebind,
          },
        });
        return inserted;
      });
      return {
        id: row.id,
        /** Shown once: only its hash is stored. */
        token,
        expiresAt: row.expiresAt.toISOString(),
        maxUses: row.maxUses,
        server,
        labels,
        allowRebind: input.allowRebind,
        command: agentCommand(server, token, labels, input.allowRebind),
        /** One command per install path (curl | sh, the .deb, Ansible), from the packaged agent. */
        install: installCommands({
          server,
          token,
          labels,
          allowRebind: input.allowRebind,
          release,
        }),
      };
    }),

  list: adminProcedure
    .input(z.object({ limit: limitInput, cursor: cursorInput }).default({ limit: 50 }))
    .query(async ({ ctx, input }) => {
      const after = decodeCursor(input.cursor, ['timestamp', 'uuid']);
      const rows = await ctx.db
        .select({ token: enrollmentTokens, createdBy: users.username, key: tokenCreatedKey })
        .from(enrollmentTokens)
        .leftJoin(users, eq(users.id, enrollmentTokens.createdBy))
        .where(
          after === null
            ? undefined
            : sql`(${enrollmentTokens.createdAt}, ${enrollmentTokens.id}) < (${String(after[0])}::timestamptz, ${String(after[1])}::uuid)`,
        )
        .orderBy(sql`${enrollmentTokens.createdAt} DESC, ${enrollmentTokens.id} DESC`)
        .limit(input.limit + 1);
      const now = new Date();
      const items = rows.slice(0, input.limit);
      const last = items.at(-1);
      return {
        items: items.map(
          ({ token: t, createdBy }): TokenView => ({
            id: t.id,
            label: t.label,
            createdAt: t.createdAt.toISOString(),
            createdBy,
            expiresAt: t.expiresAt.toISOString(),
            revokedAt: t.revokedAt?.toISOString() ?? null,
            uses: t.uses,
            maxUses: t.maxUses,
            state: tokenState(t, now),
          }),
        ),
        nextCursor:
          rows.length > input.limit && last !== undefined
            ? encodeCursor([last.key, last.token.id])
            : null,
      };
    }),

  revoke: adminProcedure.input(z.object({ id: uuidInput })).mutation(async ({ ctx, input }) => {
    await ctx.db.transaction(async (tx) => {
      const [row] = await tx
        .update(enrollmentTokens)
        .set({ revokedAt: new Date() })
        .where(and(eq(enrollmentTokens.id, input.id), isNull(enrollmentTokens.revokedAt)))
        .returning({ id: enrollmentTokens.id, label: enrollmentTokens.label });
      if (row === undefined) {
        throw new ServerError('not-found', `no unrevoked enrollment token ${input.id}`);
      }
      await recordAudit(tx, {
        ...auditBy(ctx.user),
        action: 'token-revoked',
        detail: { tokenId: row.id, label: row.label },
      });
    });
    return { ok: true as const };
  }),
});

// --- agents -------------------------------------------------------------------------------------

export interface AgentView {
  agentId: string;
  /** Null until the agent's first hello created its host row (or when the host was deleted). */
  hostId: string | null;
  hostname: string | null;
  hostState: HostState | null;
  lastSeenAt: string | null;
  labels: Record<string, string>;
  enrolledAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

const credentialCreatedKey = sql<string>`to_char(${agentCredentials.createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
/** The host's labels as one object, from a correlated subquery (the page has at most 200 rows). */
const hostLabelsJson = sql<Record<
  string,
  string
> | null>`(SELECT jsonb_object_agg(l.key, l.value) FROM host_labels l WHERE l.host_id = ${hosts.id})`;

function labelsOf(value: unknown): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]));
}

export const agentsRouter = createRouter({
  /** Enrolled agents (one credential each) with their host, newest first; keyset-paginated. */
  list: adminProcedure
    .input(
      z
        .object({
          limit: limitInput,
          cursor: cursorInput,
          state: z.enum(['live', 'revoked']).optional(),
        })
        .default({ limit: 50 }),
    )
    .query(async ({ ctx, input }) => {
      const after = decodeCursor(input.cursor, ['timestamp', 'text']);
      const where: SQL[] = [];
      if (after !== null) {
        where.push(
          sql`(${agentCredentials.createdAt}, ${agentCredentials.agentId}) < (${String(after[0])}::timestamptz, ${String(after[1])})`,
        );
      }
      if (input.state === 'live') where.push(isNull(agentCredentials.revokedAt));
      if (input.state === 'revoked') where.push(isNotNull(agentCredentials.revokedAt));
      const rows = await ctx.db
        .select({
          credential: agentCredentials,
          hostname: hosts.hostname,
          hostState: hosts.state,
          lastSeenAt: hosts.lastSeenAt,
          labels: hostLabelsJson,
          key: credentialCreatedKey,
        })
        .from(agentCredentials)
        .leftJoin(hosts, eq(hosts.id, agentCredentials.hostId))
        .where(where.length > 0 ? and(...where) : undefined)
        .orderBy(sql`${agentCredentials.createdAt} DESC, ${agentCredentials.agentId} DESC`)
        .limit(input.limit + 1);
      const items = rows.slice(0, input.limit);
      const last = items.at(-1);
      return {
        items: items.map(
          (r): AgentView => ({
            agentId: r.credential.agentId,
            hostId: r.credential.hostId,
            hostname: r.hostname,
            hostState: r.hostState,
            lastSeenAt: r.lastSeenAt?.toISOString() ?? null,
            labels: labelsOf(r.labels),
            enrolledAt: r.credential.createdAt.toISOString(),
            lastUsedAt: r.credential.lastUsedAt?.toISOString() ?? null,
            revokedAt: r.credential.revokedAt?.toISOString() ?? null,
          }),
        ),
        nextCursor:
          rows.length > input.limit && last !== undefined
            ? encodeCursor([last.key, last.credential.agentId])
            : null,
      };
    }),

  /** Revokes an agent's credential (by agent id, or every live one of a host): it is disconnected at once. */
  revoke: adminProcedure
    .input(
      z
        .object({
          agentId: z.string().min(1).max(200).optional(),
          hostId: uuidInput.optional(),
        })
        .refine((v) => (v.agentId === undefined) !== (v.hostId === undefined), {
          message: 'give exactly one of agentId and hostId',
        }),
    )
    .mutation(async ({ ctx, input }) => {
      const live = await ctx.db
        .select({ agentId: agentCredentials.agentId, hostId: agentCredentials.hostId })
        .from(agentCredentials)
        .where(
          and(
            input.agentId !== undefined
              ? eq(agentCredentials.agentId, input.agentId)
              : eq(agentCredentials.hostId, input.hostId ?? ''),
            isNull(agentCredentials.revokedAt),
          ),
        );
      if (live.length === 0) {
        throw new ServerError(
          'not-found',
          input.agentId !== undefined
            ? `no live credential for agent ${input.agentId}`
            : `no live agent credential for host ${input.hostId}`,
        );
      }
      const revoked: string[] = [];
      for (const credential of live) {
        // revokeCredential also closes the agent's socket if this process holds it.
        if (await revokeCredential(ctx.db, credential.agentId)) revoked.push(credential.agentId);
      }
      await recordAudit(
        ctx.db,
        live
          .filter((c) => revoked.includes(c.agentId))
          .map((c) => ({
            ...auditBy(ctx.user),
            action: 'agent-revoked',
            hostId: c.hostId,
            detail: { agentId: c.agentId },
          })),
      );
      return { revoked };
    }),
});

// --- users --------------------------------------------------------------------------------------

export interface UserView {
  id: string;
  username: string;
  role: UserRole;
  createdAt: string;
  disabledAt: string | null;
}

function userView(row: typeof users.$inferSelect): UserView {
  return {
    id: row.id,
    username: row.username,
    role: row.role,
    createdAt: row.createdAt.toISOString(),
    disabledAt: row.disabledAt?.toISOString() ?? null,
  };
}

const usernameInput = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/,
    'letters, digits and . _ @ - (starting with a letter or digit), at most 64',
  );
const newPasswordInput = z.string().min(12, 'at least 12 characters').max(1024);

/**
 * Locks every enabled admin row, then says whether `userId` is the last of them. Two admins
 * demoting each other at once serialize on these locks instead of both succeeding.
 */
async function isLastAdmin(tx: Database, userId: string): Promise<boolean> {
  const admins = await tx
    .select({ id: users.id })
    .from(users)
    .where(and(eq(users.role, 'admin'), isNull(users.disabledAt)))
    .for('update');
  return admins.length === 1 && admins[0]?.id === userId;
}

export const usersRouter = createRouter({
  list: adminProcedure
    .input(z.object({ limit: limitInput, cursor: cursorInput }).default({ limit: 50 }))
    .query(async ({ ctx, input }) => {
      const after = decodeCursor(input.cursor, ['text']);
      const rows = await ctx.db
        .select()
        .from(users)
        .where(after === null ? undefined : gt(users.username, String(after[0])))
        .orderBy(asc(users.username))
        .limit(input.limit + 1);
      const items = rows.slice(0, input.limit);
      const last = items.at(-1);
      return {
        items: items.map(userView),
        nextCursor:
          rows.length > input.limit && last !== undefined ? encodeCursor([last.username]) : null,
      };
    }),

  create: adminProcedure
    .use(alone)
    .input(
      z.object({ username: usernameInput, password: newPasswordInput, role: z.enum(USER_ROLES) }),
    )
    .mutation(async ({ ctx, input }) => {
      const passwordHash = await hashPassword(input.password);
      return ctx.db.transaction(async (tx) => {
        const [row] = await tx
          .insert(users)
          .values({ username: input.username, passwordHash, role: input.role })
          .onConflictDoNothing({ target: users.username })
          .returning();
        if (row === undefined) {
          throw new ServerError('conflict', `user ${input.username} already exists`);
        }
        await recordAudit(tx, {
          ...auditBy(ctx.user),
          action: 'user-created',
          detail: { userId: row.id, username: row.username, role: row.role },
        });
        return userView(row);
      });
    }),

  setRole: adminProcedure
    .input(z.object({ userId: uuidInput, role: z.enum(USER_ROLES) }))
    .mutation(async ({ ctx, input }) =>
      ctx.db.transaction(async (tx) => {
        const [current] = await tx.select().from(users).where(eq(users.id, input.userId));
        if (current === undefined) throw new ServerError('not-found', `no user ${input.userId}`);
        if (input.role !== 'admin' && (await isLastAdmin(tx, input.userId))) {
          throw new ServerError('conflict', `${current.username} is the last admin`);
        }
        const [row] = await tx
          .update(users)
          .set({ role: input.role })
          .where(eq(users.id, input.userId))
          .returning();
        if (row === undefined) throw new ServerError('not-found', `no user ${input.userId}`);
        await recordAudit(tx, {
          ...auditBy(ctx.user),
          action: 'user-role-changed',
          detail: { userId: row.id, username: row.username, from: current.role, to: row.role },
        });
        return userView(row);
      }),
    ),

  disable: adminProcedure.input(z.object({ userId: uuidInput })).mutation(async ({ ctx, input }) =>
    ctx.db.transaction(async (tx) => {
      if (await isLastAdmin(tx, input.userId)) {
        throw new ServerError('conflict', 'cannot disable the last admin');
      }
      const [row] = await tx
        .update(users)
        .set({ disabledAt: new Date() })
        .where(and(eq(users.id, input.userId), isNull(users.disabledAt)))
        .returning();
      if (row === undefined) {
        throw new ServerError('not-found', `no enabled user ${input.userId}`);
      }
      // Sessions are checked against disabled_at on every request anyway; revoking them too
      // means re-enabling the user later does not revive old cookies.
      await revokeUserSessions(tx, row.id);
      await recordAudit(tx, {
        ...auditBy(ctx.user),
        action: 'user-disabled',
        detail: { userId: row.id, username: row.username },
      });
      return userView(row);
    }),
  ),

  /** Any user, for themselves: needs the current password; logs out their other sessions. */
  changePassword: viewerProcedure
    .use(alone)
    .input(
      z.object({ currentPassword: z.string().min(1).max(1024), newPassword: newPasswordInput }),
    )
    .mutation(async ({ ctx, input }) => {
      // Guessing the current password through a stolen session counts like failed logins.
      const attempt = admitAttempt(ctx, clientIp(ctx), ctx.user.username);
      let user: typeof users.$inferSelect | undefined;
      let ok = false;
      try {
        [user] = await ctx.db.select().from(users).where(eq(users.id, ctx.user.id));
        ok = user !== undefined && (await verifyPassword(input.currentPassword, user.passwordHash));
      } catch (error) {
        attempt.abandoned();
        throw error;
      }
      if (user === undefined || !ok) {
        attempt.failed();
        throw new ServerError('forbidden', 'the current password is wrong');
      }
      attempt.succeeded();
      const passwordHash = await hashPassword(input.newPassword);
      await ctx.db.transaction(async (tx) => {
        await tx.update(users).set({ passwordHash }).where(eq(users.id, user.id));
        await revokeUserSessions(tx, user.id, ctx.user.sessionId);
        await recordAudit(tx, { ...auditBy(ctx.user), action: 'password-changed' });
      });
      return { ok: true as const };
    }),
});
