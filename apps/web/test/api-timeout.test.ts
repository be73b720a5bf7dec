// API calls while the database does not answer: a page's query stuck behind a lock (PostgreSQL:
// a table locked in another transaction; PGlite: its one connection held by a long transaction)
// used to wait as long as the lock was held, so pages spun forever. Now the call fails within
// the API's timeout with a 503 that says so, PostgreSQL cuts the statement itself
// (statement_timeout on the API pool only), and the ingest pool keeps no timeout.
import { API_APPLICATION_NAME, users } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { createSession, SESSION_COOKIE } from '../src/auth/sessions';
import { apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, poll, startFleet } from './helpers/harness';

const TIMEOUT_MS = 2_000;
/** How long past the timeout a failed call may take to come back (a loaded CI machine). */
const SLACK_MS = 3_000;

/** At most this long a hold lasts: without the timeout a call would wait for it, then succeed. */
const MAX_HOLD_MS = 12_000;

/** Holds what the API needs until the returned function is called (or MAX_HOLD_MS passed). */
async function holdDatabase(fleet: Fleet): Promise<() => Promise<void>> {
  let release = (): void => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const timer = setTimeout(() => release(), MAX_HOLD_MS);
  let holding = (): void => undefined;
  const held = new Promise<void>((resolve) => {
    holding = resolve;
  });
  const transaction = fleet.db.transaction(async (tx) => {
    if (fleet.handle.driver === 'postgres') {
      await tx.execute(sql`LOCK TABLE hosts, enrollment_tokens IN ACCESS EXCLUSIVE MODE`);
    } else {
      await tx.execute(sql`SELECT 1`);
    }
    holding();
    await gate;
  });
  await held;
  return async () => {
    clearTimeout(timer);
    release();
    await transaction;
  };
}

async function timed<T>(work: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await work;
  return { value, ms: performance.now() - started };
}

describe.each(drivers)('API calls while the database does not answer (%s)', (driver) => {
  let fleet: Fleet;
  /** A signed-in admin's client; the session is made directly, not by a login under the timeout. */
  let signedIn: () => ReturnType<typeof apiClient>;
  beforeAll(async () => {
    fleet = await startFleet(driver, {
      apiQueryTimeoutMs: TIMEOUT_MS,
      apiStatementTimeoutMs: TIMEOUT_MS,
    });
    const [ada] = await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword('not used here') })
      .returning({ id: users.id });
    const { token } = await createSession(fleet.db, ada?.id ?? '');
    signedIn = () => {
      const client = apiClient(fleet.url);
      client.cookie = `${SESSION_COOKIE}=${token}`;
      return client;
    };
  });
  afterAll(async () => {
    await fleet?.close();
  });

  it('fail within the timeout with a 503 naming it, and answer again once it is free', async () => {
    const client = signedIn();
    const release = await holdDatabase(fleet);
    try {
      const query = await timed(failure(client.api.fleet.summary.query({})));
      expect(query.value).toMatchObject({
        code: 'SERVICE_UNAVAILABLE',
        status: 503,
        message: 'the database did not answer within 2 s',
      });
      expect(query.ms).toBeLessThan(TIMEOUT_MS + SLACK_MS);

      const mutation = await timed(failure(client.api.tokens.create.mutate({ ttlHours: 1 })));
      // On PGlite the session lookup before the call waits too (one connection): it never ran.
      const maybeMade =
        driver === 'postgres'
          ? ' (the change may still have been made: reload before retrying)'
          : '';
      expect(mutation.value).toMatchObject({
        code: 'SERVICE_UNAVAILABLE',
        message: `the database did not answer within 2 s${maybeMade}`,
      });
      expect(mutation.ms).toBeLessThan(TIMEOUT_MS + SLACK_MS);
    } finally {
      await release();
    }
    // Free again: answered (a loaded machine may need a second try within the timeout).
    const again = await poll(
      () => client.api.fleet.summary.query({}).catch(() => undefined),
      TIMEOUT_MS * 5,
    );
    expect(again?.hosts.total).toBe(0);
  });

  it.runIf(driver === 'postgres')(
    'are cut inside PostgreSQL too, while the ingest pool keeps no statement timeout',
    async () => {
      const client = signedIn();
      const release = await holdDatabase(fleet);
      const waiting = async () =>
        (await fleet.db.execute(
          sql`SELECT query, now() - query_start AS waited FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'
                AND application_name = ${API_APPLICATION_NAME}`,
        )) as unknown as { query: string; waited: string }[];
      const waitingOnLocks = async () => (await waiting()).length;
      try {
        expect((await failure(client.api.fleet.summary.query({}))).code).toBe(
          'SERVICE_UNAVAILABLE',
        );
        // The API's statement is gone from the server, not just abandoned by the client (it
        // would wait on the lock, holding a connection of the API's pool, until the lock went).
        // The server's own sweepers (ingest pool, no timeout) may wait on it meanwhile.
        const end = Date.now() + TIMEOUT_MS + SLACK_MS;
        while ((await waitingOnLocks()) !== 0 && Date.now() < end) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(await waiting()).toEqual([]);
      } finally {
        await release();
      }
      const show = async (db: Fleet['db']) =>
        (
          (await db.execute(sql`SHOW statement_timeout`)) as unknown as {
            statement_timeout: string;
          }[]
        )[0]?.statement_timeout;
      expect(await show(fleet.handle.apiDb)).toBe('2s');
      expect(await show(fleet.db)).toBe('0');
      // A snapshot's transaction may legitimately take longer than a page's query.
      await fleet.db.execute(sql`SELECT pg_sleep(${(TIMEOUT_MS * 1.5) / 1000})`);
    },
  );
});
