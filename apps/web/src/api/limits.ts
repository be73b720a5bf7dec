/**
 * The API's request limits, shared with the dashboard's client (app/lib/api.ts), which must never
 * build a request the server refuses. No imports: the browser bundle includes this file.
 */

/** Calls in one tRPC batch request; the dashboard's pages batch a handful. */
export const MAX_BATCH_CALLS = 50;
