/**
 * The first admin: on a server whose users table is empty, create `admin` with ADMIN_PASSWORD, or
 * with a random one-time password printed once to stdout (the operator reads it from the first
 * start's output and changes it). Two processes starting on one fresh PostgreSQL at once create
 * one admin: the insert is conditional on an empty table and does nothing on a username conflict.
 */
import { randomBytes } from 'node:crypto';
import { type Database, users } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { rowsOf } from '../fleet/sql-rows';
import type { Logger } from '../logger';
import { hashPassword } from './passwords';

export const BOOTSTRAP_ADMIN = 'admin';

export interface EnsureAdminResult {
  created: boolean;
  /** The generated one-time password when one was generated (it was also printed). */
  oneTimePassword: string | null;
}

export async function ensureAdmin(
  db: Database,
  options: { password?: string },
  logger: Logger,
  print: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
): Promise<EnsureAdminResult> {
  // Cheap check first: a server with users (every start but the first) hashes nothing.
  const [existing] = await db.select({ id: users.id }).from(users).limit(1);
  if (existing !== undefined) return { created: false, oneTimePassword: null };
  const generated = options.password === undefined ? randomBytes(12).toString('base64url') : null;
  const password = options.password ?? generated ?? '';
  const passwordHash = await hashPassword(password);
  const inserted = await db.execute<{ id: string }>(sql`
    INSERT INTO ${users} (username, password_hash, role)
    SELECT ${BOOTSTRAP_ADMIN}, ${passwordHash}, 'admin'
    WHERE NOT EXISTS (SELECT 1 FROM ${users})
    ON CONFLICT (username) DO NOTHING
    RETURNING id`);
  if (rowsOf(inserted).length === 0) return { created: false, oneTimePassword: null };
  if (generated !== null) {
    // Printed, not logged: log lines are shipped and kept; this line is meant for one pair of eyes.
    print(`vfio-fleet: created user ${BOOTSTRAP_ADMIN} with one-time password ${generated}`);
    logger.warn(
      { username: BOOTSTRAP_ADMIN },
      'created the first admin with a one-time password (printed once on stdout); change it',
    );
  } else {
    logger.info({ username: BOOTSTRAP_ADMIN }, 'created the first admin with ADMIN_PASSWORD');
  }
  return { created: true, oneTimePassword: generated };
}
