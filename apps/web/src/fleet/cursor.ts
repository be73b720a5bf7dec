/**
 * Opaque keyset-pagination cursors: the sort key of the last row of a page, base64url JSON.
 * Keyset rather than OFFSET so a page costs the same at row 10 and at row 100,000, and rows
 * inserted meanwhile do not shift the pages (every row is returned exactly once).
 */
import { z } from 'zod';
import { ServerError } from '../errors';

const cursorSchema = z.array(z.union([z.string().max(1000), z.number(), z.null()])).max(8);
export type CursorKey = z.infer<typeof cursorSchema>;

export function encodeCursor(key: CursorKey): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string | null | undefined, length: number): CursorKey | null {
  if (cursor === null || cursor === undefined || cursor === '') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new ServerError('bad-request', 'invalid cursor');
  }
  const result = cursorSchema.safeParse(parsed);
  if (!result.success || result.data.length !== length) {
    throw new ServerError('bad-request', 'invalid cursor');
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
