/**
 * Opaque keyset-pagination cursors: the sort key of the last row of a page, base64url JSON.
 * Keyset rather than OFFSET so a page costs the same at row 10 and at row 100,000, and rows
 * inserted meanwhile do not shift the pages (every row is returned exactly once).
 */
import { z } from 'zod';
import { ServerError } from '../errors';

const cursorSchema = z.array(z.union([z.string().max(1000), z.number(), z.null()])).max(8);
export type CursorKey = z.infer<typeof cursorSchema>;

/**
 * What each part of a cursor must be, checked before it reaches SQL: a cursor is the caller's to
 * forge, and a part the query casts (`::uuid`, `::timestamptz`, `::bigint`) would otherwise fail
 * there as a 500.
 */
export type CursorPart = 'text' | 'uuid' | 'timestamp' | 'integer';

const PART_SCHEMAS: Record<CursorPart, z.ZodType> = {
  text: z.string(),
  uuid: z.uuid(),
  // As to_char writes created_at: microseconds, UTC.
  timestamp: z.iso.datetime({ precision: 6 }),
  // A bigint arrives from the database as a string of digits.
  integer: z.union([z.number().int(), z.string().regex(/^-?\d{1,18}$/)]),
};

export function encodeCursor(key: CursorKey): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

const INVALID = 'invalid cursor: pass back the nextCursor of the previous page, unchanged';

/** The key a cursor holds, each part checked against `parts`; a bad one is a bad request. */
export function decodeCursor(
  cursor: string | null | undefined,
  parts: readonly CursorPart[],
): CursorKey | null {
  if (cursor === null || cursor === undefined || cursor === '') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new ServerError('bad-request', INVALID);
  }
  const result = cursorSchema.safeParse(parsed);
  if (
    !result.success ||
    result.data.length !== parts.length ||
    !parts.every((part, i) => PART_SCHEMAS[part].safeParse(result.data[i]).success)
  ) {
    throw new ServerError('bad-request', INVALID);
  }
  return result.data;
}

/** The page and the cursor of the next one, from a query that fetched limit + 1 rows. */
export function page<T>(
  rows: T[],
  limit: number,
  keyOf: (row: T) => CursorKey,
): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return {
    items,
    nextCursor: rows.length > limit && last !== undefined ? encodeCursor(keyOf(last)) : null,
  };
}
