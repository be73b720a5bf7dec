'use client';
/**
 * The dashboard's one data source: a typed tRPC client over HTTP to our own server's `/api/trpc`.
 * Only the router's *type* and the API's limits (src/api/limits.ts, import-free) come from src/:
 * no server code reaches the browser bundle.
 * Pages call it through @tanstack/react-query (`useQuery({ queryKey, queryFn: () => api.x.query() })`).
 */
import {
  createTRPCClient,
  httpBatchLink,
  httpLink,
  splitLink,
  TRPCClientError,
} from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import { MAX_BATCH_CALLS } from '../../src/api/limits';
import type { AppRouter } from '../../src/api/root';

export type RouterOutputs = inferRouterOutputs<AppRouter>;
export type RouterInputs = inferRouterInputs<AppRouter>;

export const api = createTRPCClient<AppRouter>({
  links: [
    // Mutations go one per request: they are rare, and those that check a password refuse to be
    // part of a batch.
    splitLink({
      condition: (op) => op.type === 'mutation',
      true: httpLink({ url: '/api/trpc' }),
      false: httpBatchLink({ url: '/api/trpc', maxURLLength: 4000, maxItems: MAX_BATCH_CALLS }),
    }),
  ],
});

/** The tRPC error code of a failed call (`UNAUTHORIZED`, `FORBIDDEN`, `CONFLICT`...), or null. */
export function errorCode(error: unknown): string | null {
  if (error instanceof TRPCClientError) {
    const data = error.data as { code?: unknown } | undefined;
    return typeof data?.code === 'string' ? data.code : null;
  }
  return null;
}

/** What to show a user for a failed call: the server's message (it never holds internals). */
export function errorText(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

/** How often live views poll: the API is cheap aggregates, and a rebind takes seconds. */
export const LIVE_MS = 2_000;
