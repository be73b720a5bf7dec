import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type DbHandle, hosts, MIGRATIONS_FOLDER, parseDbEnv } from '../src/index';
import { createScratch, drivers, type Scratch } from './harness';

const journal = JSON.parse(
  readFileSync(path.join(MIGRATIONS_FOLDER, 'meta', '_journal.json'), 'utf8'),
) as { entries: unknown[] };

const TABLES = [
  'agent_credentials',
  'audit_log',
  'devices',
  'enrollment_tokens',
  'host_blocking_reasons',
  'host_device_stats',
  'host_labels',
  'hosts',
  'iommu_groups',
  'job_events',
  'jobs',
  'sessions',
  'users',
];

async function appliedMigrations(handle: DbHandle): Promise<number> {
  const result = await handle.db.execute(
    sql`select count(*)::int as n from drizzle.__drizzle_migrations`,
  );
  return rowsOf<{ n: number }>(result)[0]?.n ?? 0;
}

async function publicTables(handle: DbHandle): Promise<string[]> {
  const result = await handle.db.execute(
    sql`select table_name from information_schema.tables where table_schema = 'public' order by 1`,
  );
  return rowsOf<{ table_name: string }>(result).map((row) => row.table_name);
}

/** db.execute returns an array on postgres.js and `{ rows }` on PGlite. */
function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return (result as { rows: T[] }).rows;
}

describe.each(drivers)('migrations on %s', (driver) => {
  let scratch: Scratch;
  beforeAll(async () => {
    scratch = await createScratch(driver);
  });
  afterAll(async () => {
    await scratch?.dispose();
  });

  it('apply from an empty database, then again as a no-op', async () => {
    const handle = await scratch.open();
    try {
      expect(await publicTables(handle)).toEqual([]);
      await handle.migrate();
      expect(await publicTables(handle)).toEqual(TABLES);
      expect(await appliedMigrations(handle)).toBe(journal.entries.length);
      await handle.migrate();
      expect(await appliedMigrations(handle)).toBe(journal.entries.length);
    } finally {
      await handle.close();
    }
  });

  it('two concurrent migrate() calls apply each migration once', async () => {
    const fresh = await createScratch(driver);
    // On PostgreSQL: two handles, i.e. two connection pools, as two server processes would have.
    const first = await fresh.open();
    const second = driver === 'postgres' ? await fresh.open() : first;
    try {
      await Promise.all([first.migrate(), second.migrate(), first.migrate()]);
      expect(await appliedMigrations(first)).toBe(journal.entries.length);
      expect(await publicTables(second)).toEqual(TABLES);
    } finally {
      await first.close();
      if (second !== first) await second.close();
      await fresh.dispose();
    }
  });
});

describe('PGlite data directory', () => {
  it('persists across close and reopen', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'vf-db-persist-'));
    try {
      const first = await createDb({ env: { VFIO_FLEET_DATA_DIR: dir } });
      expect(first.driver).toBe('pglite');
      await first.migrate();
      await first.db.insert(hosts).values({ agentId: 'agent-1', hostname: 'gpu-01' });
      await first.close();

      const second = await createDb({ env: { VFIO_FLEET_DATA_DIR: dir } });
      await second.migrate();
      const rows = await second.db.select({ hostname: hosts.hostname }).from(hosts);
      expect(rows).toEqual([{ hostname: 'gpu-01' }]);
      await second.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs in memory with memory://', async () => {
    const handle = await createDb({ dataDir: 'memory://', env: {} });
    await handle.migrate();
    expect(await publicTables(handle)).toEqual(TABLES);
    await handle.close();
  });
});

describe('createDb configuration', () => {
  it('picks postgres when DATABASE_URL is set, PGlite otherwise', () => {
    expect(parseDbEnv({ DATABASE_URL: 'postgres://u@h/db' }).DATABASE_URL).toBe(
      'postgres://u@h/db',
    );
    expect(parseDbEnv({ DATABASE_URL: '' }).DATABASE_URL).toBeUndefined();
    expect(() => parseDbEnv({ DATABASE_URL: 'mysql://u@h/db' })).toThrow(/postgres:\/\//);
  });

  it('names the host, port and database of an unreachable PostgreSQL, never the password', async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    const error = await createDb({
      env: { DATABASE_URL: 'postgres://root:s3cret@127.0.0.1:1/fleet' },
    })
      .then(() => undefined)
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain('cannot reach PostgreSQL at 127.0.0.1:1/fleet');
    expect(message).not.toContain('s3cret');
  });
});
