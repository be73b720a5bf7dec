// Runs one test suite on every available driver: PGlite always, PostgreSQL when DATABASE_URL is
// set (CI sets it). On PostgreSQL each test file gets its own database, so files running in
// parallel never see each other's rows or migrations.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { createDb, type Database, type DbDriver, type DbHandle } from '../src/index';

export const maintenanceUrl = process.env.DATABASE_URL || undefined;

export const drivers: DbDriver[] = maintenanceUrl ? ['pglite', 'postgres'] : ['pglite'];

/** A scratch database for one test file; `dispose()` drops it (or deletes the PGlite dir). */
export interface Scratch {
  driver: DbDriver;
  /** Opens a new handle on the scratch database (several may be open at once on PostgreSQL). */
  open(): Promise<DbHandle>;
  dispose(): Promise<void>;
}

export async function createScratch(driver: DbDriver): Promise<Scratch> {
  if (driver === 'pglite') {
    const dir = await mkdtemp(path.join(tmpdir(), 'vf-db-test-'));
    return {
      driver,
      open: () => createDb({ dataDir: dir, env: {} }),
      dispose: () => rm(dir, { recursive: true, force: true }),
    };
  }
  if (!maintenanceUrl) throw new Error('DATABASE_URL is not set');
  const name = `vf_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(maintenanceUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE "${name}"`);
  const url = new URL(maintenanceUrl);
  url.pathname = `/${name}`;
  return {
    driver,
    open: () => createDb({ url: url.toString(), env: {} }),
    async dispose() {
      // WITH (FORCE) (PostgreSQL 13+): a handle a failed test left open must not keep it alive.
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end({ timeout: 5 });
    },
  };
}

/**
 * For a describe block: a migrated scratch database of `driver`, opened before its tests and
 * dropped after them. The returned function gives the handle inside a test.
 */
export function useMigratedDb(driver: DbDriver): () => DbHandle {
  let scratch: Scratch | undefined;
  let handle: DbHandle | undefined;
  beforeAll(async () => {
    scratch = await createScratch(driver);
    handle = await scratch.open();
    await handle.migrate();
  });
  afterAll(async () => {
    await handle?.close();
    await scratch?.dispose();
  });
  return () => {
    if (handle === undefined) throw new Error('the scratch database is not open yet');
    return handle;
  };
}

/** Thrown to roll a test's transaction back; anything else is a real failure. */
class RolledBack extends Error {}

/**
 * Runs `body` in a transaction that is always rolled back, so every test starts from the same
 * migrated, empty database without truncating anything.
 */
export async function inRollback(db: Database, body: (tx: Database) => Promise<void>) {
  try {
    await db.transaction(async (tx) => {
      await body(tx);
      throw new RolledBack();
    });
  } catch (error) {
    if (!(error instanceof RolledBack)) throw error;
  }
}

/** The SQLSTATE of a database error, however the driver and drizzle wrapped it. */
export function sqlState(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    current = current.cause;
  }
  return undefined;
}

/** Awaits `promise`, expecting a database error, and returns its SQLSTATE. */
export async function rejectsWithState(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
  } catch (error) {
    return sqlState(error) ?? `no SQLSTATE: ${String(error)}`;
  }
  return 'resolved';
}
