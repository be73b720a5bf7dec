/**
 * createDb(): one drizzle database over either driver.
 *
 * - `DATABASE_URL` (or `url`) set: PostgreSQL through postgres.js — the production setup, where
 *   several server processes share one database.
 * - Otherwise: embedded PGlite (PostgreSQL compiled to WASM) in a data directory, so
 *   `npm start` works on a laptop with nothing else installed. `memory://` keeps it in memory.
 *
 * Both expose the same `Database` type (drizzle's PgDatabase over this schema), so code written
 * against one runs on the other, transactions included.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle as drizzlePostgres } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { openDataDir } from './data-dir';
import { parseDbEnv } from './env';
import { type Listen, pgliteListen, postgresListen } from './notify';
import * as schema from './schema';

export type Schema = typeof schema;

/** The database, on either driver. A transaction (`db.transaction(async (tx) => ...)`) is one too. */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;
/** What `db.transaction()` hands its callback. */
export type Transaction = Parameters<Parameters<Database['transaction']>[0]>[0];

export type DbDriver = 'postgres' | 'pglite';

export interface DbHandle {
  db: Database;
  /**
   * The same database over connections of its own, for the dashboard's API: on PostgreSQL a
   * second pool, so that a page's queries never wait for a connection behind the agents' ingest
   * transactions (which can hold all of `db`'s while a fleet reconnects), and with
   * `apiStatementTimeoutMs` as its statement_timeout. On PGlite, `db` itself: one in-process
   * connection is all there is, and no statement_timeout (a query runs on this process's own
   * thread; one waiting for the connection is bounded only by its caller's deadline).
   */
  apiDb: Database;
  driver: DbDriver;
  /** Applies the committed migrations; idempotent, and serialized across processes on PostgreSQL. */
  migrate(): Promise<void>;
  /**
   * LISTEN on `channel` (see notify.ts): `onPayload` gets each NOTIFY payload, from this process
   * or any other on the same database. Resolves to the function that stops listening.
   */
  listen: Listen;
  close(): Promise<void>;
}

export interface CreateDbOptions {
  /** PostgreSQL URL; wins over `env.DATABASE_URL`. */
  url?: string;
  /** PGlite data directory (or `memory://`); wins over `env.VFIO_FLEET_DATA_DIR`. */
  dataDir?: string;
  /** Defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** Where the generated SQL lives; defaults to this package's `drizzle/` folder. */
  migrationsFolder?: string;
  /** Hears what opening had to fix (a PGlite data dir other users could read); the server logs it. */
  onNotice?: (message: string) => void;
  /**
   * PostgreSQL: `statement_timeout` of apiDb's connections, so a page's query that waits on a
   * lock or a stuck server is cut there. The ingest pool (`db`) keeps none: a snapshot's
   * transaction must not fail for being slow. PGlite: no effect (see DbHandle.apiDb).
   */
  apiStatementTimeoutMs?: number;
}

export const DEFAULT_DATA_DIR = './.data';

/** The committed migrations, next to src/ in this package. */
export const MIGRATIONS_FOLDER = fileURLToPath(new URL('../drizzle', import.meta.url));

/**
 * Key of the PostgreSQL advisory lock held while migrating. An arbitrary constant (the bytes of
 * "vfiofl"); only needs to be the same in every server process and unlikely to collide.
 */
export const MIGRATION_LOCK_KEY = 0x7666_696f_666c;

/** `host:port/database` of a PostgreSQL URL: what an error may show (never the password). */
export function describePostgresUrl(url: string): string {
  try {
    const parsed = new URL(url);
    const database = parsed.pathname.replace(/^\//, '') || '(default database)';
    return `${parsed.hostname || 'localhost'}:${parsed.port || '5432'}/${database}`;
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}

/**
 * Connections of the API's own pool (see DbHandle.apiDb); postgres.js opens them on demand. The
 * ingest's pool keeps postgres.js's default of 10.
 */
const API_POOL_SIZE = 4;

/** application_name of the API pool's connections (PostgreSQL). */
export const API_APPLICATION_NAME = 'vfio-fleet-api';

export async function createDb(options: CreateDbOptions = {}): Promise<DbHandle> {
  const env = parseDbEnv(options.env ?? process.env);
  const migrationsFolder = options.migrationsFolder ?? MIGRATIONS_FOLDER;
  const url = options.url ?? env.DATABASE_URL;
  if (url !== undefined) return openPostgres(url, migrationsFolder, options.apiStatementTimeoutMs);
  return openPglite(
    options.dataDir ?? env.VFIO_FLEET_DATA_DIR ?? DEFAULT_DATA_DIR,
    migrationsFolder,
    options.onNotice ?? (() => undefined),
  );
}

async function openPostgres(
  url: string,
  migrationsFolder: string,
  apiStatementTimeoutMs: number | undefined,
): Promise<DbHandle> {
  const where = describePostgresUrl(url);
  const clientOptions = {
    connect_timeout: 10,
    // CREATE ... IF NOT EXISTS in the migrator raises notices; they are not worth a log line.
    onnotice: () => {},
  };
  const client = postgres(url, clientOptions);
  // postgres.js connects lazily; connect now so a wrong URL fails here, with a message that says
  // where it tried, instead of at the first query somewhere in the server.
  try {
    await client`select 1`;
  } catch (error) {
    await client.end({ timeout: 1 }).catch(() => {});
    throw new Error(`cannot reach PostgreSQL at ${where}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  const db = drizzlePostgres(client, { schema });
  const apiClient = postgres(url, {
    ...clientOptions,
    max: API_POOL_SIZE,
    // Startup parameters: every API connection has them from its first statement on. The name
    // tells the API's sessions from the ingest's in pg_stat_activity.
    connection: {
      application_name: API_APPLICATION_NAME,
      ...(apiStatementTimeoutMs === undefined
        ? {}
        : { statement_timeout: Math.ceil(apiStatementTimeoutMs) }),
    },
  });
  const apiDb = drizzlePostgres(apiClient, { schema });

  return {
    db,
    apiDb,
    driver: 'postgres',
    listen: postgresListen(client),
    async migrate() {
      // A session-level advisory lock belongs to one connection, so the lock and the migration
      // run on a dedicated single-connection client: a second server process starting at the
      // same moment waits here, then finds every migration applied and does nothing.
      const lockClient = postgres(url, { ...clientOptions, max: 1 });
      try {
        await lockClient`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
        try {
          await migratePostgres(drizzlePostgres(lockClient), { migrationsFolder });
        } finally {
          await lockClient`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
        }
      } finally {
        await lockClient.end({ timeout: 5 });
      }
    },
    async close() {
      await Promise.all([client.end({ timeout: 5 }), apiClient.end({ timeout: 5 })]);
    },
  };
}

async function openPglite(
  dataDir: string,
  migrationsFolder: string,
  notice: (message: string) => void,
): Promise<DbHandle> {
  const inMemory = dataDir.startsWith('memory://');
  const location = inMemory ? dataDir : path.resolve(dataDir);
  // Locked and made private before PGlite reads or creates a file in it (see data-dir.ts).
  const dir = inMemory ? null : await openDataDir(location, notice);
  let client: PGlite | null = null;
  try {
    client = await PGlite.create(location);
    await dir?.settle();
  } catch (error) {
    await client?.close().catch(() => undefined);
    await dir?.close();
    throw new Error(`cannot open the PGlite database in ${location}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  const db = drizzlePglite({ client, schema });
  // PGlite is one connection in this process (the data directory's lock keeps other processes
  // out), so concurrent migrate() calls only need to queue behind each other here.
  let migrating: Promise<void> = Promise.resolve();

  return {
    db,
    apiDb: db,
    driver: 'pglite',
    listen: pgliteListen(client),
    migrate() {
      // A migration creates files (0666, see data-dir.ts): private again once it is done.
      const run = migrating.then(async () => {
        await migratePglite(db, { migrationsFolder });
        await dir?.settle();
      });
      migrating = run.catch(() => {});
      return run;
    },
    async close() {
      await migrating;
      if (!client.closed) await client.close();
      await dir?.close();
    },
  };
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as Error & { code?: unknown }).code;
    return typeof code === 'string' && !error.message.includes(code)
      ? `${error.message} (${code})`
      : error.message;
  }
  return String(error);
}

/** Runs `SELECT 1`: for health checks. */
export async function ping(db: Database): Promise<void> {
  await db.execute(sql`select 1`);
}
