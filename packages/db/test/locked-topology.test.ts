// lockedTopologyColumns / topologyIfCurrent: a host's topology read in the statement that locks
// its row must be what loadHostTopology reads, and must be refused when that statement waited
// for a store of the same host that changed it (READ COMMITTED reads it from the older snapshot).
import { eq, sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import {
  bulkUpsertDevices,
  type Database,
  hosts,
  loadHostTopology,
  lockedTopologyColumns,
  syncIommuGroups,
  topologyIfCurrent,
} from '../src/index';
import { addressOf, makeDevice } from './fixtures';
import { drivers, inRollback, useMigratedDb } from './harness';

function lockWithTopology(tx: Database, hostId: string) {
  return tx
    .select({ id: hosts.id, ...lockedTopologyColumns(hostId) })
    .from(hosts)
    .where(eq(hosts.id, hostId))
    .for('update');
}

async function newHost(tx: Database, agentId: string): Promise<string> {
  const [row] = await tx.insert(hosts).values({ agentId, hostname: agentId }).returning();
  if (!row) throw new Error('host insert returned nothing');
  return row.id;
}

describe.each(drivers)('locked topology on %s', (driver) => {
  const handle = useMigratedDb(driver);

  it('reads with the lock what loadHostTopology reads', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'topology');
      await bulkUpsertDevices(tx, hostId, [
        makeDevice(0, { kind: 'bridge', iommuGroup: 1 }),
        makeDevice(1, { parent: addressOf(0), iommuGroup: 2 }),
        makeDevice(2, { parent: addressOf(0), iommuGroup: 2 }),
        makeDevice(3, { iommuGroup: null }),
      ]);
      await syncIommuGroups(tx, hostId, [
        { id: 2, devices: [addressOf(1), addressOf(2)] },
        { id: 1, devices: [addressOf(0)] },
      ]);
      const [row] = await lockWithTopology(tx, hostId);
      if (row === undefined) throw new Error('no host row');
      const topology = topologyIfCurrent(row);
      expect(topology).toEqual(await loadHostTopology(tx, hostId));
      expect(topology?.links).toHaveLength(4);
      expect(topology?.listing.map((g) => g.id)).toEqual([1, 2]);
      // A host without devices or groups has an empty topology, not none.
      const [bare] = await lockWithTopology(tx, await newHost(tx, 'bare'));
      if (bare === undefined) throw new Error('no host row');
      expect(topologyIfCurrent(bare)).toEqual({ links: [], listing: [] });
    }));

  it.runIf(driver === 'postgres')(
    'refuses the topology when the lock waited for a store that changed it',
    async () => {
      const db = handle().db;
      const hostId = await newHost(db, `raced-${Math.random()}`);
      await bulkUpsertDevices(db, hostId, [makeDevice(0)]);
      let release = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let locked = () => {};
      const isLocked = new Promise<void>((resolve) => {
        locked = resolve;
      });
      // Another store of the host: its row updated (as every inventory write does) and a device
      // added, committed only once the lock below is waiting for it.
      const store = db.transaction(async (tx) => {
        await tx.update(hosts).set({ lastSeq: 2 }).where(eq(hosts.id, hostId));
        await bulkUpsertDevices(tx, hostId, [makeDevice(1)]);
        locked();
        await released;
      });
      await isLocked;
      const waiting = db.transaction(async (tx) => {
        const [row] = await lockWithTopology(tx, hostId);
        if (row === undefined) throw new Error('no host row');
        return { stale: topologyIfCurrent(row), fresh: await loadHostTopology(tx, hostId) };
      });
      for (let tries = 0; ; tries++) {
        const result = await db.execute(
          sql`SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        const [w] = (Array.isArray(result) ? result : []) as { n: number }[];
        if ((w?.n ?? 0) > 0) break;
        if (tries > 200) throw new Error('the lock never waited for the store');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      release();
      await store;
      const { stale, fresh } = await waiting;
      expect(stale).toBeNull();
      expect(fresh.links.map((l) => l.address)).toEqual([addressOf(0), addressOf(1)]);
      // Without a concurrent store the same statement's topology is current.
      const [again] = await db.transaction((tx) => lockWithTopology(tx, hostId));
      if (again === undefined) throw new Error('no host row');
      expect(topologyIfCurrent(again)?.links).toHaveLength(2);
    },
  );
});
