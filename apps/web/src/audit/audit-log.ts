/**
 * The audit trail: one row per user action (who, what, host, group, address, detail) and one per
 * job that ended ('job-finished', with the drivers before and after). Rows are only ever
 * appended; they keep ids and the username as they were, so they outlive the users and hosts
 * they mention (audit_log has no foreign keys on purpose).
 */
import { auditLog, type Database } from '@vfio-fleet/db';
import { and, desc, eq, lt, type SQL } from 'drizzle-orm';
import { z } from 'zod';
import { ServerError } from '../errors';

/** The actions the server records; free-form text in the table, so the set can grow. */
export const AUDIT_ACTIONS = [
  'job-created',
  'bulk-created',
  'job-cancel-requested',
  'job-cancelled',
  'job-finished',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditEntry {
  /** Null for what the server did on its own (a job that finished). */
  userId: string | null;
  username: string | null;
  action: AuditAction | (string & {});
  hostId?: string | null;
  iommuGroup?: number | null;
  address?: string | null;
  detail?: unknown;
}

export interface AuditView {
  /** bigserial, as a string: JSON numbers lose precision past 2^53. */
  id: string;
  at: string;
  userId: string | null;
  username: string | null;
  action: string;
  hostId: string | null;
  iommuGroup: number | null;
  address: string | null;
  detail: unknown;
}

/** Rows per INSERT: 8 parameters a row, far below PostgreSQL's 65,535 bind parameters. */
const ROWS_PER_STATEMENT = 1000;

/** Appends one entry or several (one statement per thousand). Pass the action's transaction. */
export async function recordAudit(
  db: Database,
  entry: AuditEntry | readonly AuditEntry[],
): Promise<void> {
  const entries: readonly AuditEntry[] = Array.isArray(entry) ? entry : [entry as AuditEntry];
  for (let i = 0; i < entries.length; i += ROWS_PER_STATEMENT) {
    const rows = entries.slice(i, i + ROWS_PER_STATEMENT).map((e) => ({
      userId: e.userId,
      username: e.username,
      action: e.action,
      hostId: e.hostId ?? null,
      iommuGroup: e.iommuGroup ?? null,
      address: e.address ?? null,
      // jsonb: undefined would be dropped by drizzle and land as SQL NULL anyway; be explicit.
      detail: e.detail === undefined ? null : e.detail,
    }));
    if (rows.length > 0) await db.insert(auditLog).values(rows);
  }
}

export const MAX_AUDIT_PAGE = 200;

const cursorSchema = z.object({ id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER) });
const uuidSchema = z.uuid();

function encodeCursor(id: number): string {
  return Buffer.from(JSON.stringify({ id })).toString('base64url');
}

function decodeCursor(cursor: string): number {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new ServerError('bad-request', 'invalid cursor');
  }
  const result = cursorSchema.safeParse(parsed);
  if (!result.success) throw new ServerError('bad-request', 'invalid cursor');
  return result.data.id;
}

/**
 * Newest first, keyset-paginated on the id (a bigserial, so insertion order): a page never skips
 * or repeats a row however many are appended while someone pages.
 */
export async function listAudit(
  db: Database,
  input: {
    limit: number;
    cursor?: string | null;
    action?: string;
    hostId?: string;
    userId?: string;
  },
): Promise<{ items: AuditView[]; nextCursor: string | null }> {
  if (!Number.isInteger(input.limit) || input.limit < 1 || input.limit > MAX_AUDIT_PAGE) {
    throw new ServerError('bad-request', `limit must be an integer from 1 to ${MAX_AUDIT_PAGE}`);
  }
  const where: SQL[] = [];
  if (input.cursor !== undefined && input.cursor !== null) {
    where.push(lt(auditLog.id, decodeCursor(input.cursor)));
  }
  // A malformed id would be a PostgreSQL cast error (an 'internal' 500) instead of a bad request.
  for (const id of [input.hostId, input.userId]) {
    if (id !== undefined && !uuidSchema.safeParse(id).success) {
      throw new ServerError('bad-request', `not a uuid: ${JSON.stringify(id.slice(0, 64))}`);
    }
  }
  if (input.action !== undefined) where.push(eq(auditLog.action, input.action));
  if (input.hostId !== undefined) where.push(eq(auditLog.hostId, input.hostId));
  if (input.userId !== undefined) where.push(eq(auditLog.userId, input.userId));
  // One row more than the page tells whether there is a next page without a count(*).
  const rows = await db
    .select()
    .from(auditLog)
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(desc(auditLog.id))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  return {
    items: page.map((row) => ({
      id: String(row.id),
      at: row.at.toISOString(),
      userId: row.userId,
      username: row.username,
      action: row.action,
      hostId: row.hostId,
      iommuGroup: row.iommuGroup,
      address: row.address,
      detail: row.detail,
    })),
    nextCursor: rows.length > input.limit && last !== undefined ? encodeCursor(last.id) : null,
  };
}
