// The dashboard stays answerable while agents hold every ingest connection: on PostgreSQL the API
// queries through a pool of its own (DbHandle.apiDb). Here the ingest pool (postgres.js's 10) is
// filled with transactions that sleep, as a fleet reconnecting after a server restart fills it
// with snapshot writes, and a page's query must not wait for them. PGlite has one connection and
// no second pool, so this is PostgreSQL only.
import { users } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { apiClient } from './helpers/api-client';
import { drivers, type Fleet, startFleet } from './helpers/harness';

const PASSWORD = 'a long enough password';
const INGEST_POOL = 10;
const HOLD_SECONDS = 4;

describe.runIf(drivers.includes('postgres'))('the API pool (postgres)', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet('postgres');
    await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
  });
  afterAll(async () => {
    await fleet?.close();
  });

  it('answers fleet.summary at once while every ingest connection is busy', async () => {
    const client = apiClient(fleet.url);
    await client.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
    // Promise.all subscribes at once: a drizzle query runs only when something awaits it.
    const holders = Promise.all(
      Array.from({ length: INGEST_POOL }, () =>
        fleet.db.execute(sql`SELECT pg_sleep(${HOLD_SECONDS})`),
      ),
    );
    // Wait until all of them run, seen from the API's own connections.
    const deadline = Date.now() + 3000;
    for (;;) {
      const result = await fleet.handle.apiDb.execute(
        sql`SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep%'`,
      );
      const [row] = (Array.isArray(result) ? result : []) as { n: number }[];
      if ((row?.n ?? 0) >= INGEST_POOL) break;
      if (Date.now() > deadline) throw new Error('the ingest pool never filled');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const started = performance.now();
    const summary = await client.api.fleet.summary.query({});
    const took = performance.now() - started;
    expect(summary.hosts.total).toBe(0);
    // The ingest pool frees up only after HOLD_SECONDS: a query that waited for it takes that long.
    expect(took).toBeLessThan((HOLD_SECONDS * 1000) / 2);
    await holders;
  });
});
