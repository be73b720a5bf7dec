/**
 * A bound on how long an API call waits for the database. Without one, a page whose query waits
 * on a lock, or on a PostgreSQL that accepts connections and then hangs, spins forever. Two
 * layers, one message: PostgreSQL cuts an API statement at its statement_timeout (createDb's
 * apiStatementTimeoutMs), and the call itself gives up after the same time (ops/deadline), which
 * also covers a server that never answers and, on PGlite, a query queued behind the one
 * connection. Either way the caller gets 503 "the database did not answer within N s".
 */
import { TRPCError } from '@trpc/server';
import { isQueryCanceled } from '@vfio-fleet/db';
import type { Logger } from '../logger';
import { DeadlineError, withDeadline } from '../ops/deadline';

export const DEFAULT_API_QUERY_TIMEOUT_MS = 10_000;

type CallType = 'query' | 'mutation' | 'subscription';

export function databaseTimeoutError(ms: number, type: CallType, cause?: unknown): TRPCError {
  const seconds = Number((ms / 1000).toFixed(1));
  // A write cut on the client side may still commit: the caller must look before trying again.
  const after =
    type === 'mutation' ? ' (the change may still have been made: reload before retrying)' : '';
  return new TRPCError({
    code: 'SERVICE_UNAVAILABLE',
    message: `the database did not answer within ${seconds} s${after}`,
    cause,
  });
}

interface Deps {
  apiQueryTimeoutMs?: number;
  logger: Logger;
}

/** `work` (a procedure's middleware result, or the session lookup), bounded as above. */
export async function boundedByDatabase<R extends { ok: boolean }>(
  work: Promise<R>,
  deps: Deps,
  what: { path: string; type: CallType },
): Promise<R> {
  const ms = deps.apiQueryTimeoutMs ?? DEFAULT_API_QUERY_TIMEOUT_MS;
  let result: R;
  try {
    result = await withDeadline(work, ms, 'the database');
  } catch (error) {
    if (!(error instanceof DeadlineError || isQueryCanceled(error))) throw error;
    deps.logger.warn(
      { path: what.path, timeoutMs: ms },
      'API call timed out waiting for the database',
    );
    throw databaseTimeoutError(ms, what.type, error);
  }
  const cause = (result as { error?: { cause?: unknown } }).error?.cause;
  if (!result.ok && isQueryCanceled(cause)) {
    deps.logger.warn({ path: what.path, timeoutMs: ms }, 'API statement cut by statement_timeout');
    throw databaseTimeoutError(ms, what.type, cause);
  }
  return result;
}

/** The session lookup before any procedure runs (createContext), bounded the same way. */
export async function sessionWithin<T>(lookup: Promise<T>, deps: Deps): Promise<T> {
  const wrapped = lookup.then((value) => ({ ok: true as const, value }));
  const result = await boundedByDatabase(wrapped, deps, { path: '(session)', type: 'query' });
  return result.value;
}
