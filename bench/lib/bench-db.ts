// Throwaway databases for the benches, on both drivers: a fresh PostgreSQL database on the server
// of DATABASE_URL (default: this machine's, 127.0.0.1:5432, trust auth), or a PGlite data
// directory in a temp folder. Every database scenario runs on both, since PGlite is what
// `npm start` uses and PostgreSQL is what a fleet runs on.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDb, type DbDriver, type DbHandle } from '@vfio-fleet/db';
import postgres from 'postgres';

export const DRIVERS: readonly DbDriver[] = ['postgres', 'pglite'];

/** The PostgreSQL server the benches create their databases on. */
export const MAINTENANCE_URL =
  process.env.DATABASE_URL ?? 'postgres://root@127.0.0.1:5432/postgres';

export interface BenchDatabase {
  driver: DbDriver;
  /** What a server process needs in its environment to use this database. */
  env: Record<string, string>;
  /** Opens (and migrates) it in this process. PGlite: only one process may have it open. */
  open(): Promise<DbHandle>;
  /** Drops the database or removes the data directory. */
  drop(): Promise<void>;
}

export async function createBenchDatabase(driver: DbDriver, label: string): Promise<BenchDatabase> {
  if (driver === 'pglite') {
    const dataDir = await mkdtemp(path.join(tmpdir(), `vfio-fleet-bench-${label}-`));
    return {
      driver,
      env: { VFIO_FLEET_DATA_DIR: dataDir },
      async open() {
        const handle = await createDb({ dataDir, env: {} });
        await handle.migrate();
        return handle;
      },
      drop: () => rm(dataDir, { recursive: true, force: true }),
    };
  }
  const name = `vf_bench_${label.replace(/[^a-z0-9]/g, '_')}_${randomBytes(4).toString('hex')}`;
  const admin = postgres(MAINTENANCE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE "${name}"`);
  const url = new URL(MAINTENANCE_URL);
  url.pathname = `/${name}`;
  return {
    driver,
    env: { DATABASE_URL: url.toString() },
    async open() {
      const handle = await createDb({ url: url.toString(), env: {} });
      await handle.migrate();
      return handle;
    },
    async drop() {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end({ timeout: 5 });
    },
  };
}

/** Which drivers to run: `--driver postgres|pglite` narrows it, else both. */
export function selectedDrivers(argv: readonly string[]): DbDriver[] {
  const i = argv.indexOf('--driver');
  const wanted = i >= 0 ? argv[i + 1] : undefined;
  if (wanted === undefined) return [...DRIVERS];
  if (wanted !== 'postgres' && wanted !== 'pglite') {
    throw new Error(`--driver must be postgres or pglite, not ${wanted}`);
  }
  return [wanted];
}
