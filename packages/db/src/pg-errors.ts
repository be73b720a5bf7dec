/**
 * Reading PostgreSQL errors through both drivers: drizzle wraps a driver's error
 * (DrizzleQueryError), so the PostgreSQL error may be its cause; PGlite and postgres.js both carry
 * the SQLSTATE in `code` and the constraint as `constraint` or `constraint_name`.
 */

const UNIQUE_VIOLATION = '23505';
/** query_canceled: statement_timeout (or a cancel request) cut the statement. */
const QUERY_CANCELED = '57014';

/**
 * Whether `error` (or what it wraps) is a unique violation, of `constraint` when one is named
 * (an error that does not say which constraint counts as any).
 */
export function isUniqueViolation(error: unknown, constraint?: string): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const e = current as { code?: unknown; constraint?: unknown; constraint_name?: unknown };
    if (e.code === UNIQUE_VIOLATION) {
      const named = e.constraint ?? e.constraint_name;
      return constraint === undefined || named === undefined || named === constraint;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** Whether `error` (or what it wraps) is a statement cut by statement_timeout or a cancel. */
export function isQueryCanceled(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    if ((current as { code?: unknown }).code === QUERY_CANCELED) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
