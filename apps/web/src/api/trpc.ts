/**
 * The tRPC core: the request context, the procedures by role, and the one mapping from the
 * server's ServerError codes to tRPC (and so HTTP) error codes.
 *
 * Roles are ranked: viewer < operator < admin. A procedure names the least role it needs; no
 * session at all is UNAUTHORIZED everywhere but the public procedures (auth.login, auth.me).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { initTRPC, TRPCError } from '@trpc/server';
import type { Database, JobRow, UserRole } from '@vfio-fleet/db';
import type { LoginAttempts } from '../auth/login-attempts';
import type { SessionUser } from '../auth/sessions';
import type { AgentDownloads } from '../downloads/agent-downloads';
import { ServerError, type ServerErrorCode } from '../errors';
import type { AgentGateway } from '../gateway/agent-gateway';
import type { Logger } from '../logger';
import { boundedByDatabase } from './db-deadline';

/** What the API needs of the job dispatcher (wired by server.ts when there is one). */
export interface JobNotifier {
  wake(hostId: string): void;
  requestCancel(job: JobRow): void;
}

export type { LoginLimiters } from '../auth/login-attempts';

/** Everything of the server the API uses, the same for every request. */
export interface ApiDeps {
  db: Database;
  logger: Logger;
  gateway: AgentGateway;
  dispatcher: JobNotifier | null;
  /** The failed-login limits (auth/login-attempts.ts), one per server. */
  loginAttempts: LoginAttempts;
  sessionTtlHours: number;
  /** The packaged agent (for the install commands); null: none. */
  downloads: AgentDownloads | null;
  /** This server's URL for agents, as public-url.ts finds it for a request. */
  serverUrl: (req: IncomingMessage) => string;
  /** How long a call may wait for the database (db-deadline.ts; default 10 s). */
  apiQueryTimeoutMs?: number;
}

export interface ApiContext extends ApiDeps {
  req: IncomingMessage;
  res: ServerResponse;
  user: SessionUser | null;
  /** Calls in this HTTP request: more than 1 in a batch. */
  calls: number;
}

const TRPC_CODES: Partial<Record<ServerErrorCode, TRPCError['code']>> = {
  'bad-request': 'BAD_REQUEST',
  unauthorized: 'UNAUTHORIZED',
  forbidden: 'FORBIDDEN',
  'not-found': 'NOT_FOUND',
  conflict: 'CONFLICT',
  'rate-limited': 'TOO_MANY_REQUESTS',
};

interface Issue {
  path: readonly PropertyKey[];
  message: string;
}

/** Validation issues of a zod (or any Standard Schema) failure, if `cause` is one. */
function issuesOf(cause: unknown): Issue[] | null {
  const issues = (cause as { issues?: unknown } | undefined)?.issues;
  if (!Array.isArray(issues)) return null;
  return issues.flatMap((issue: unknown) => {
    const { path, message } = (issue ?? {}) as { path?: unknown; message?: unknown };
    if (typeof message !== 'string') return [];
    const keys = Array.isArray(path)
      ? path.map((key: unknown) =>
          typeof key === 'object' && key !== null && 'key' in key
            ? (key as { key: PropertyKey }).key
            : key,
        )
      : [];
    return [{ path: keys as PropertyKey[], message }];
  });
}

function fieldName(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(input)' : path.map(String).join('.');
}

const t = initTRPC.context<ApiContext>().create({
  // Never send stack traces to callers, whatever NODE_ENV says.
  isDev: false,
  errorFormatter({ shape, error }) {
    const issues = error.code === 'BAD_REQUEST' ? issuesOf(error.cause) : null;
    if (issues !== null && issues.length > 0) {
      // "invalid input: limit: Too big..." names the field, which zod's JSON message buries.
      const message = `invalid input: ${issues.map((i) => `${fieldName(i.path)}: ${i.message}`).join('; ')}`;
      return {
        ...shape,
        message,
        data: { ...shape.data, fields: issues.map((i) => fieldName(i.path)) },
      };
    }
    if (error.code === 'INTERNAL_SERVER_ERROR') {
      return { ...shape, message: 'internal server error' };
    }
    return shape;
  },
});

export const createRouter = t.router;

/**
 * ServerError → TRPCError with the matching code and the error's own (peer-safe) message;
 * anything else is a bug: logged here with its details, sent as a bare internal error.
 */
const mapErrors = t.middleware(async ({ ctx, next, path }) => {
  const result = await next();
  if (result.ok) return result;
  const { error } = result;
  const cause = error.cause;
  if (cause instanceof ServerError) {
    const code = TRPC_CODES[cause.code];
    if (code !== undefined) throw new TRPCError({ code, message: cause.message, cause });
  }
  if (error.code === 'INTERNAL_SERVER_ERROR') {
    ctx.logger.error({ err: cause ?? error, path }, 'API procedure failed');
  }
  return result;
});

/** Every call ends within the API's database deadline, with a clear 503 (db-deadline.ts). */
const databaseDeadline = t.middleware(({ ctx, next, path, type }) =>
  boundedByDatabase(next(), ctx, { path, type }),
);

export const publicProcedure = t.procedure.use(mapErrors).use(databaseDeadline);

/**
 * For procedures that hash a password: one call per HTTP request. In a batch, one request would
 * buy many guesses, and many hashes' worth of the server's time.
 */
export const alone = t.middleware(({ ctx, path, next }) => {
  if (ctx.calls > 1) {
    throw new TRPCError({
      code: 'BAD_REQUEST',
      message: `${path} must be called on its own, not in a batch (this request has ${ctx.calls} calls)`,
    });
  }
  return next();
});

const RANK: Record<UserRole, number> = { viewer: 0, operator: 1, admin: 2 };

function requireRole(least: UserRole) {
  return t.middleware(({ ctx, next }) => {
    const { user } = ctx;
    if (user === null) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'log in first' });
    if (RANK[user.role] < RANK[least]) {
      throw new TRPCError({ code: 'FORBIDDEN', message: `this needs the ${least} role` });
    }
    return next({ ctx: { ...ctx, user } });
  });
}

export const viewerProcedure = publicProcedure.use(requireRole('viewer'));
export const operatorProcedure = publicProcedure.use(requireRole('operator'));
export const adminProcedure = publicProcedure.use(requireRole('admin'));
