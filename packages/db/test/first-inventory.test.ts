// insertFirstInventory against a real database: a host's first inventory in one statement must
// leave exactly the rows the upserts, syncs and rollups leave, and must refuse a host that
// already holds inventory rather than write over it.
import type { Device, IommuGroup } from '@vfio-fleet/core';
import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import {
  bulkUpsertDevices,
  type Database,
  hostInventoryEmptySql,
  hosts,
  insertFirstInventory,
  isUniqueViolation,
  syncHostLabels,
  syncHostRollups,
  syncIommuGroups,
} from '../src/index';
import { addressOf, blocked, makeDevice } from './fixtures';
import { drivers, inRollback, useMigratedDb } from './harness';

async function newHost(tx: Database, agentId: string): Promise<string> {
  const [row] = await tx.insert(hosts).values({ agentId, hostname: agentId }).returning();
  if (!row) throw new Error('host insert returned nothing');
  return row.id;
}

function rowsOf(result: unknown): Record<string, unknown>[] {
  if (Array.isArray(result)) return result as Record<string, unknown>[];
  return (result as { rows: Record<string, unknown>[] }).rows;
}

/** Every inventory row of a host, without its id or write time, in a fixed order, per table. */
async function inventoryOf(tx: Database, hostId: string) {
  const read = async (query: ReturnType<typeof sql>) => rowsOf(await tx.execute(query));
  return {
    devices: await read(
      sql`SELECT * FROM devices WHERE host_id = ${hostId}::uuid ORDER BY address`,
    ),
    groups: await read(
      sql`SELECT group_id, devices FROM iommu_groups WHERE host_id = ${hostId}::uuid ORDER BY group_id`,
    ),
    types: await read(
      sql`SELECT * FROM host_device_stats WHERE host_id = ${hostId}::uuid
          ORDER BY vendor_id, device_id, numa_node NULLS FIRST`,
    ),
    reasons: await read(
      sql`SELECT * FROM host_blocking_reasons WHERE host_id = ${hostId}::uuid ORDER BY reason`,
    ),
    labels: await read(
      sql`SELECT key, value FROM host_labels WHERE host_id = ${hostId}::uuid ORDER BY key`,
    ),
  };
}

function withoutHost(rows: Record<string, unknown>[]) {
  return rows.map(({ host_id: _host, updated_at: _at, ...rest }) => rest);
}

async function isEmpty(tx: Database, hostId: string): Promise<boolean> {
  const [row] = rowsOf(await tx.execute(sql`SELECT ${hostInventoryEmptySql(hostId)} AS empty`));
  return row?.empty === true;
}

/** A host of mixed devices: statuses, reasons, NUMA nodes (one unknown), SR-IOV, a duplicate. */
function mixedInventory(): { devices: Device[]; groups: IommuGroup[] } {
  const devices: Device[] = [];
  for (let i = 0; i < 40; i++) {
    let device = makeDevice(i, { numaNode: i % 7 === 0 ? null : i % 2 });
    if (i % 5 === 1) device = blocked(device, i % 10 === 1 ? 'shared-group' : 'host-critical');
    if (i % 6 === 2) device = { ...device, driver: 'vfio-pci', driverModule: 'vfio_pci' };
    if (i % 9 === 3) {
      device = {
        ...device,
        vendorId: '15b3',
        deviceId: '101d',
        sriov: { totalVfs: 8, numVfs: i % 3, driversAutoprobe: true, vfs: [] },
      };
    }
    devices.push(device);
  }
  // Reported twice: the last report wins, as in bulkUpsertDevices.
  devices.push({ ...makeDevice(4), driver: null, driverModule: null });
  const groups = Array.from({ length: 20 }, (_, g) => ({
    id: 100 + g,
    devices: [addressOf(2 * g), addressOf(2 * g + 1)],
  }));
  return { devices, groups };
}

describe.each(drivers)('first inventory on %s', (driver) => {
  const handle = useMigratedDb(driver);

  it('stores exactly what the upserts, the syncs and the rollups store', () =>
    inRollback(handle().db, async (tx) => {
      const { devices, groups } = mixedInventory();
      const labels = { rack: 'r7', 'example.com/tier': 'gpu', 'with "quote"': 'x' };

      const first = await newHost(tx, 'first');
      // Labels come from the agent's configuration and survive an inventory reset: synced here.
      await syncHostLabels(tx, first, { rack: 'r0', gone: 'yes' });
      expect(await isEmpty(tx, first)).toBe(true);
      expect(await insertFirstInventory(tx, first, { devices, groups, labels })).toEqual({
        devicesWritten: 40,
      });
      expect(await isEmpty(tx, first)).toBe(false);

      // The same inventory the usual way, over an older one that it replaces.
      const usual = await newHost(tx, 'usual');
      await bulkUpsertDevices(tx, usual, [makeDevice(60), blocked(makeDevice(61), 'other')]);
      await syncIommuGroups(tx, usual, [{ id: 9, devices: [addressOf(60)] }]);
      await syncHostRollups(tx, usual);
      await syncHostLabels(tx, usual, { rack: 'r0', gone: 'yes' });
      await bulkUpsertDevices(tx, usual, devices);
      await tx.execute(
        sql`DELETE FROM devices WHERE host_id = ${usual}::uuid AND address IN (${addressOf(60)}, ${addressOf(61)})`,
      );
      await syncIommuGroups(tx, usual, groups);
      await syncHostRollups(tx, usual);
      await syncHostLabels(tx, usual, labels);

      const a = await inventoryOf(tx, first);
      const b = await inventoryOf(tx, usual);
      expect(a.devices).toHaveLength(40);
      expect(a.types.length).toBeGreaterThan(3);
      expect(a.reasons.length).toBe(2);
      for (const table of ['devices', 'groups', 'types', 'reasons', 'labels'] as const) {
        expect(withoutHost(a[table]), table).toEqual(withoutHost(b[table]));
      }
      expect(a.labels).toEqual([
        { key: 'example.com/tier', value: 'gpu' },
        { key: 'rack', value: 'r7' },
        { key: 'with "quote"', value: 'x' },
      ]);
    }));

  it('refuses a host that already holds inventory, and writes nothing', () =>
    inRollback(handle().db, async (tx) => {
      const { devices, groups } = mixedInventory();
      for (const [name, prepare] of [
        ['a device', (h: string) => bulkUpsertDevices(tx, h, [makeDevice(3)])],
        ['a group', (h: string) => syncIommuGroups(tx, h, [{ id: 105, devices: [] }])],
      ] as const) {
        const hostId = await newHost(tx, `held-${name}`);
        await prepare(hostId);
        expect(await isEmpty(tx, hostId), name).toBe(false);
        const before = await inventoryOf(tx, hostId);
        // In a savepoint, so that the refusal leaves the test's transaction usable.
        const refused = await tx
          .transaction((sp) => insertFirstInventory(sp, hostId, { devices, groups, labels: {} }))
          .then(
            () => null,
            (error: unknown) => error,
          );
        expect(isUniqueViolation(refused), `${name}: ${String(refused)}`).toBe(true);
        expect(await inventoryOf(tx, hostId)).toEqual(before);
      }
    }));

  it('takes an inventory without devices or groups', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'bare');
      expect(
        await insertFirstInventory(tx, hostId, { devices: [], groups: [], labels: { a: '1' } }),
      ).toEqual({ devicesWritten: 0 });
      const stored = await inventoryOf(tx, hostId);
      expect(stored).toEqual({
        devices: [],
        groups: [],
        types: [],
        reasons: [],
        labels: [{ key: 'a', value: '1' }],
      });
    }));
});
