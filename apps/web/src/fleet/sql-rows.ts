/**
 * Small helpers for raw SQL results, which differ by driver: `db.execute()` returns an array on
 * postgres.js and `{ rows }` on PGlite; bigint comes back as a string from postgres.js; a
 * timestamptz is a Date on both (or a string inside json).
 */
import { type SQL, sql } from 'drizzle-orm';

export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  const rows = (result as { rows?: unknown }).rows;
  return Array.isArray(rows) ? (rows as T[]) : [];
}

export function toInt(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && value !== '') return Number(value);
  return 0;
}

export function toIntOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : toInt(value);
}

/** ISO 8601 of a timestamp from either driver, or null. */
export function toIso(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  const date = value instanceof Date ? value : new Date(String(value));
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

export function toStringOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** `%text%` for ILIKE, with the caller's own `%`, `_` and `\` taken literally. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/** Joins conditions with AND; `TRUE` when there are none. */
export function allOf(conditions: readonly (SQL | undefined)[]): SQL {
  const present = conditions.filter((c): c is SQL => c !== undefined);
  if (present.length === 0) return sql`TRUE`;
  return sql.join(
    present.map((c) => sql`(${c})`),
    sql` AND `,
  );
}

/**
 * The in-use devices of host_device_stats rows `s`: readiness partitions a host's devices into
 * in-use, bound, ready and blocked, and the rollup counts the other three, so in-use is the rest
 * (no rollup column needed for it).
 */
export const IN_USE_FROM_STATS = sql.raw(
  'coalesce(sum(s.total - s.status_bound - s.ready - s.blocked), 0)::int',
);
