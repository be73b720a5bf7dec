// The batched last_seen writer against a real database: hosts heard from within one batching
// delay are written by one statement (their row versions share one transaction id, xmin), a
// revoked credential or a host row that is gone is reported for its connection to be closed, and
// a failed write is reported so the connection asks again.
import { randomUUID } from 'node:crypto';
import { agentCredentials, type Database, hosts } from '@vfio-fleet/db';
import { eq, inArray, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../src/fleet/sql-rows';
import { LastSeenWriter, type SeenCallbacks } from '../src/gateway/last-seen';
import { drivers, openTestDb } from './helpers/harness';

function recorder() {
  const events: string[] = [];
  const callbacks = (id: string): SeenCallbacks => ({
    revoked: () => events.push(`revoked ${id}`),
    failed: () => events.push(`failed ${id}`),
  });
  return { events, callbacks };
}

describe.each(drivers)('LastSeenWriter (%s)', (driver) => {
  let db: Database;
  let close: () => Promise<void>;
  beforeAll(async () => {
    const testDb = await openTestDb(driver);
    db = testDb.db;
    close = testDb.close;
  });
  afterAll(async () => {
    await close?.();
  });

  async function newHosts(count: number): Promise<{ id: string; agentId: string }[]> {
    return db
      .insert(hosts)
      .values(
        Array.from({ length: count }, (_, i) => ({
          agentId: `seen-${randomUUID()}`,
          hostname: `seen-${i}`,
        })),
      )
      .returning({ id: hosts.id, agentId: hosts.agentId });
  }

  it('writes every host heard within the delay in one statement, and marks them online', async () => {
    const rows = await newHosts(40);
    const at = new Date('2026-12-03T12:00:00.000Z');
    const { events, callbacks } = recorder();
    const writer = new LastSeenWriter(
      db,
      () => at,
      () => undefined,
      100,
    );
    for (const row of rows) writer.mark(row.id, callbacks(row.id));
    await new Promise((resolve) => setTimeout(resolve, 300));
    await writer.flush();
    const ids = rows.map((r) => r.id);
    const stored = await db
      .select({ seen: hosts.lastSeenAt, state: hosts.state, xmin: sql<string>`xmin::text` })
      .from(hosts)
      .where(inArray(hosts.id, ids));
    expect(stored).toHaveLength(40);
    expect(stored.every((r) => r.seen?.getTime() === at.getTime() && r.state === 'online')).toBe(
      true,
    );
    expect(new Set(stored.map((r) => r.xmin)).size).toBe(1);
    expect(events).toEqual([]);
  });

  it('rewrites host rows in place: heartbeats do not grow the hosts table', async () => {
    // fillfactor 50 (migration 0005) leaves room on each page for HOT updates; at the default
    // every round of writes below moved most rows to new pages.
    const rows = await newHosts(400);
    const size = async () => {
      const result = await db.execute(sql`SELECT pg_relation_size('hosts')::bigint AS bytes`);
      const [row] = rowsOf<{ bytes: string | number }>(result);
      return Number(row?.bytes);
    };
    const writer = new LastSeenWriter(
      db,
      () => new Date(),
      () => undefined,
      10_000,
    );
    const { callbacks } = recorder();
    for (const row of rows) writer.mark(row.id, callbacks(row.id));
    await writer.flush();
    const before = await size();
    for (let round = 0; round < 40; round++) {
      for (const row of rows) writer.mark(row.id, callbacks(row.id));
      await writer.flush();
    }
    expect(await size()).toBeLessThanOrEqual(before * 1.5);
  });

  it('reports a revoked credential and a host row that is gone', async () => {
    const [kept, revoked] = await newHosts(2);
    if (kept === undefined || revoked === undefined) throw new Error('no hosts');
    await db.insert(agentCredentials).values([
      { agentId: kept.agentId, hostId: kept.id, secretHash: 'x' },
      { agentId: revoked.agentId, hostId: revoked.id, secretHash: 'x', revokedAt: new Date() },
    ]);
    const gone = randomUUID();
    const { events, callbacks } = recorder();
    const writer = new LastSeenWriter(
      db,
      () => new Date(),
      () => undefined,
      10_000,
    );
    for (const id of [kept.id, revoked.id, gone]) writer.mark(id, callbacks(id));
    await writer.flush();
    expect(events.sort()).toEqual([`revoked ${gone}`, `revoked ${revoked.id}`].sort());
    const [row] = await db.select().from(hosts).where(eq(hosts.id, kept.id));
    expect(row?.state).toBe('online');
  });

  it('reports a failed write to every connection of the batch', async () => {
    const rows = await newHosts(2);
    const { events, callbacks } = recorder();
    const errors: number[] = [];
    const writer = new LastSeenWriter(
      db,
      () => new Date(Number.NaN),
      (_error, count) => errors.push(count),
      10_000,
    );
    for (const row of rows) writer.mark(row.id, callbacks(row.id));
    await writer.flush();
    expect(errors).toEqual([2]);
    expect(events.sort()).toEqual(rows.map((r) => `failed ${r.id}`).sort());
  });
});
