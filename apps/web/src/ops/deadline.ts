/**
 * A bound on how long a caller waits for the database. postgres.js never fails a query while it
 * keeps re-dialling a server that accepts the TCP connection and then drops it (a proxy or load
 * balancer with no database behind it): the query waits, silently, until the database is back. A
 * health check or a scrape must answer within its caller's own timeout instead, and say "down".
 */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/** `promise`, or a DeadlineError after `ms` (the promise itself runs on; its result is dropped). */
export async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(`${what}: no answer within ${ms} ms`)), ms);
  });
  // A late rejection of the abandoned promise must not become an unhandled rejection.
  promise.catch(() => undefined);
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
