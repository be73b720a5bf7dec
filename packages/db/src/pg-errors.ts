/**
 * Reading PostgreSQL errors through both drivers: drizzle wraps a driver's error
 * (DrizzleQueryError), so the PostgreSQL error may be its cause; PGlite and postgres.js both carry
 * the SQLSTATE in `code` and the constraint as `constraint` or `constraint_name`.
 */

const UNIQUE_VIOLATION = '23505';

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
