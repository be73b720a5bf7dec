/**
 * The tRPC API on the server's own HTTP server, under `/api/trpc/` (the standalone adapter's node
 * request handler), with the session user resolved from the cookie once per request.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { LoginAttempts, type LoginLimiters } from '../auth/login-attempts';
import { SlidingWindowLimiter } from '../auth/rate-limit';
import { DEFAULT_SESSION_TTL_HOURS, readSessionToken, resolveSession } from '../auth/sessions';
import { sessionWithin } from './db-deadline';
import { publicUrl } from './public-url';
import { guardApiRequest } from './request-guard';
import { appRouter } from './root';
import type { ApiContext, ApiDeps } from './trpc';

export const TRPC_PATH = '/api/trpc';
/** API inputs are small; a bulk job's host list is the largest. */
const MAX_BODY_BYTES = 1024 * 1024;

/** 5 failed logins per username, 50 per client address, in 5 minutes. */
export function defaultLoginLimiters(): LoginLimiters {
  const windowMs = 5 * 60_000;
  return {
    byUsername: new SlidingWindowLimiter({ limit: 5, windowMs }),
    byIp: new SlidingWindowLimiter({ limit: 50, windowMs }),
  };
}

type OptionalDeps = 'sessionTtlHours' | 'dispatcher' | 'downloads' | 'serverUrl';
export type ApiHandlerDeps = Omit<ApiDeps, OptionalDeps | 'loginAttempts'> &
  Partial<Pick<ApiDeps, OptionalDeps>> & { loginLimiters?: LoginLimiters };

export function createApiHandler(
  deps: ApiHandlerDeps,
): (req: IncomingMessage, res: ServerResponse) => void {
  const { loginLimiters, ...rest } = deps;
  const shared: ApiDeps = {
    ...rest,
    dispatcher: deps.dispatcher ?? null,
    downloads: deps.downloads ?? null,
    loginAttempts: new LoginAttempts(loginLimiters ?? defaultLoginLimiters()),
    sessionTtlHours: deps.sessionTtlHours ?? DEFAULT_SESSION_TTL_HOURS,
    serverUrl: deps.serverUrl ?? ((req) => publicUrl(req, { trustProxy: false })),
  };
  return createHTTPHandler({
    router: appRouter,
    basePath: `${TRPC_PATH}/`,
    maxBodySize: MAX_BODY_BYTES,
    async createContext({ req, res, info }): Promise<ApiContext> {
      guardApiRequest(req, info);
      const token = readSessionToken(req);
      const user =
        token === null ? null : await sessionWithin(resolveSession(shared.db, token), shared);
      return { ...shared, req, res, user, calls: info.calls.length };
    },
  });
}
