import type { Device } from '@vfio-fleet/core';
import { and, count, eq, sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import {
  bulkUpsertDevices,
  type Database,
  DEVICE_ROW_PARAMETERS,
  DEVICE_ROWS_PER_STATEMENT,
  deleteDevicesNotIn,
  deviceRow,
  devices,
  hostLabels,
  hosts,
  iommuGroups,
  MAX_BIND_PARAMETERS,
  syncHostLabels,
  syncIommuGroups,
  textArrayLiteral,
} from '../src/index';
import { addressOf, blocked, makeDevice } from './fixtures';
import { drivers, inRollback, useMigratedDb } from './harness';

async function newHost(tx: Database, agentId = 'agent-1'): Promise<string> {
  const [row] = await tx.insert(hosts).values({ agentId, hostname: agentId }).returning();
  if (!row) throw new Error('host insert returned nothing');
  return row.id;
}

/** An error's message and its causes' messages, one string. */
function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    parts.push(current.message);
    current = current.cause;
  }
  return parts.join(' <- ') || String(error);
}

async function deviceCount(tx: Database, hostId: string): Promise<number> {
  const [row] = await tx.select({ n: count() }).from(devices).where(eq(devices.hostId, hostId));
  return row?.n ?? 0;
}

describe.each(drivers)('devices on %s', (driver) => {
  const handle = useMigratedDb(driver);

  it('stores readiness from the core Device: status, reason codes, first reason, facts', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const gpu = blocked(makeDevice(1), 'shared-group');
      const result = await bulkUpsertDevices(tx, hostId, [makeDevice(0), gpu]);
      expect(result).toMatchObject({ written: 2, statements: 1 });

      const [row] = await tx
        .select()
        .from(devices)
        .where(and(eq(devices.hostId, hostId), eq(devices.address, gpu.address)));
      expect(row).toMatchObject({
        vendorId: '10de',
        deviceId: '2330',
        status: 'blocked',
        reasonCodes: ['shared-group', 'host-driver-bound'],
        firstReason: 'shared-group',
        vfioModule: 'nvgrace_gpu_vfio_pci',
        iommuGroup: 101,
        className: '3D controller',
      });
      expect(row?.facts).toEqual(gpu);
      expect(row?.reasons).toEqual(gpu.readiness.reasons);
    }));

  it('writes nothing when the same devices are sent again, and only the changed one after', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const list = Array.from({ length: 50 }, (_, i) => makeDevice(i));
      expect((await bulkUpsertDevices(tx, hostId, list)).written).toBe(50);
      const before = await tx
        .select({ address: devices.address, updatedAt: devices.updatedAt })
        .from(devices)
        .where(eq(devices.hostId, hostId));

      // A resend with the same content, objects rebuilt (key order differs) as a parse would.
      const resend = list.map((device) => JSON.parse(JSON.stringify(device)) as typeof device);
      const unchanged = await bulkUpsertDevices(tx, hostId, resend.reverse());
      expect(unchanged).toMatchObject({ written: 0, writtenAddresses: [] });

      const changed = list.map((device, i) =>
        i === 7 ? { ...device, driver: 'vfio-pci', driverModule: 'vfio_pci' } : device,
      );
      const once = await bulkUpsertDevices(tx, hostId, changed);
      expect(once.writtenAddresses).toEqual([addressOf(7)]);

      const after = await tx
        .select({ address: devices.address, updatedAt: devices.updatedAt, driver: devices.driver })
        .from(devices)
        .where(eq(devices.hostId, hostId));
      const beforeAt = new Map(before.map((row) => [row.address, row.updatedAt.getTime()]));
      for (const row of after) {
        if (row.address === addressOf(7)) expect(row.driver).toBe('vfio-pci');
        else expect(row.updatedAt.getTime()).toBe(beforeAt.get(row.address));
      }
    }));

  it('writes more rows than a VALUES insert could bind in one statement', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const total = DEVICE_ROWS_PER_STATEMENT * 2 + 17;
      // As a multi-row VALUES insert this would need more parameters than PostgreSQL accepts.
      expect(total * DEVICE_ROW_PARAMETERS).toBeGreaterThan(MAX_BIND_PARAMETERS * 2);
      const list = Array.from({ length: total }, (_, i) => makeDevice(i));

      const first = await bulkUpsertDevices(tx, hostId, list);
      expect(first).toMatchObject({ written: total, statements: 1 });
      expect(await deviceCount(tx, hostId)).toBe(total);

      const again = await bulkUpsertDevices(tx, hostId, list);
      expect(again).toMatchObject({ written: 0, statements: 1 });
    }));

  it('derives exactly the columns deviceRow() computes, nulls and reason order included', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const plain = makeDevice(0);
      const variants: Device[] = [
        plain,
        blocked(makeDevice(1), 'shared-group'),
        {
          ...makeDevice(2),
          subsystemVendorId: null,
          subsystemDeviceId: null,
          revision: null,
          driver: null,
          driverModule: null,
          driverOverride: 'vfio-pci',
          iommuGroup: null,
          numaNode: null,
          parent: addressOf(0),
          physfn: addressOf(1),
          sriov: {
            totalVfs: 8,
            numVfs: 2,
            driversAutoprobe: true,
            vfs: [addressOf(3), addressOf(4)],
          },
          names: { vendor: null, device: null, subsystem: null, className: 'Unclassified' },
          vfio: null,
          vfioDriver: null,
          readiness: {
            status: 'blocked',
            reasons: ['z-last', 'a-first', 'm-middle'].map((code) => ({
              code,
              severity: 'error' as const,
              message: `"quoted" \\ ${code} ünïcode`,
              remedy: null,
              related: [],
            })),
          },
        },
        { ...makeDevice(3), readiness: { status: 'ready', reasons: [] } },
      ];
      await bulkUpsertDevices(tx, hostId, variants);
      const rows = await tx.select().from(devices).where(eq(devices.hostId, hostId));
      const byAddress = new Map(rows.map((row) => [row.address, row]));
      for (const device of variants) {
        const { updatedAt: _expectedAt, ...expected } = deviceRow(hostId, device);
        const { updatedAt, ...stored } = byAddress.get(device.address) ?? {};
        expect(updatedAt).toBeInstanceOf(Date);
        expect(stored).toEqual(expected);
      }
    }));

  it('takes an empty list without a statement', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      expect(await bulkUpsertDevices(tx, hostId, [])).toEqual({
        written: 0,
        writtenAddresses: [],
        statements: 0,
      });
    }));

  it('keeps the last report of an address listed twice', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const first = makeDevice(0);
      const second = { ...makeDevice(0), driver: 'vfio-pci' };
      expect((await bulkUpsertDevices(tx, hostId, [first, second])).written).toBe(1);
      const [row] = await tx.select().from(devices).where(eq(devices.hostId, hostId));
      expect(row?.driver).toBe('vfio-pci');
    }));

  it('proves the limit is real: one statement over it is refused', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const total = Math.floor(MAX_BIND_PARAMETERS / DEVICE_ROW_PARAMETERS) + 1;
      const list = Array.from({ length: total }, (_, i) => makeDevice(i));
      // A multi-row VALUES insert of that many rows: the driver or server must refuse it, which
      // is why bulkUpsertDevices sends one jsonb document instead. Run in a savepoint so the transaction survives.
      const direct = tx.transaction(async (sp) => {
        await sp.insert(devices).values(list.map((device) => deviceRow(hostId, device)));
      });
      const error = await direct.then(
        () => undefined,
        (caught: unknown) => caught,
      );
      // postgres.js refuses it before sending (MAX_PARAMETERS_EXCEEDED); PGlite wraps the Int16
      // count and the server rejects the Bind message. Either way: a parameter error.
      expect(describeError(error)).toMatch(/parameter/i);
      expect(await deviceCount(tx, hostId)).toBe(0);
    }));

  it('deleteDevicesNotIn removes only that host’s devices missing from the list', () =>
    inRollback(handle().db, async (tx) => {
      const hostA = await newHost(tx, 'agent-a');
      const hostB = await newHost(tx, 'agent-b');
      const list = Array.from({ length: 10 }, (_, i) => makeDevice(i));
      await bulkUpsertDevices(tx, hostA, list);
      await bulkUpsertDevices(tx, hostB, list);

      const keep = list.slice(0, 6).map((device) => device.address);
      expect(await deleteDevicesNotIn(tx, hostA, keep)).toBe(4);
      expect(await deleteDevicesNotIn(tx, hostA, keep)).toBe(0);
      expect(await deviceCount(tx, hostA)).toBe(6);
      expect(await deviceCount(tx, hostB)).toBe(10);

      expect(await deleteDevicesNotIn(tx, hostB, [])).toBe(10);
      expect(await deviceCount(tx, hostB)).toBe(0);
    }));

  it('deleteDevicesNotIn takes any number of addresses in one parameter', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      await bulkUpsertDevices(tx, hostId, [makeDevice(0), makeDevice(1)]);
      const many = Array.from({ length: 70_000 }, (_, i) => `0001:00:00.${i % 8}-${i}`);
      many.push(addressOf(1));
      expect(await deleteDevicesNotIn(tx, hostId, many)).toBe(1);
    }));

  it('array literals survive quotes and backslashes', () =>
    inRollback(handle().db, async (tx) => {
      const values = ['plain', 'with "quotes"', 'back\\slash', 'comma,brace{}', ''];
      const result = await tx.execute(
        sql`select ${textArrayLiteral(values)}::text[] = ${sql.raw(
          `ARRAY[${values.map((v) => `'${v.replaceAll("'", "''")}'`).join(',')}]::text[]`,
        )} as same`,
      );
      const rows = Array.isArray(result) ? result : (result as { rows: unknown[] }).rows;
      expect(rows).toEqual([{ same: true }]);
    }));

  it('deleting a host deletes its devices, labels and IOMMU groups', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const other = await newHost(tx, 'agent-other');
      for (const id of [hostId, other]) {
        await bulkUpsertDevices(tx, id, [makeDevice(0), makeDevice(1)]);
        await tx.insert(hostLabels).values({ hostId: id, key: 'rack', value: 'r1' });
        await tx.insert(iommuGroups).values({ hostId: id, groupId: 100, devices: [addressOf(0)] });
      }
      await tx.delete(hosts).where(eq(hosts.id, hostId));

      for (const table of [devices, hostLabels, iommuGroups]) {
        const rows = await tx.select({ hostId: table.hostId }).from(table);
        expect(rows.map((row) => row.hostId).sort()).toEqual(
          table === devices ? [other, other] : [other],
        );
      }
    }));

  it('syncIommuGroups writes new and changed groups only, and drops vanished ones', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const groups = [
        { id: 1, devices: [addressOf(0)] },
        { id: 2, devices: [addressOf(1), addressOf(2)] },
        { id: 3, devices: [addressOf(3)] },
      ];
      expect(await syncIommuGroups(tx, hostId, groups)).toEqual({ written: 3, deleted: 0 });
      expect(await syncIommuGroups(tx, hostId, groups)).toEqual({ written: 0, deleted: 0 });
      const next = [groups[0], { id: 2, devices: [addressOf(1)] }, { id: 4, devices: [] }].filter(
        (group) => group !== undefined,
      );
      expect(await syncIommuGroups(tx, hostId, next)).toEqual({ written: 2, deleted: 1 });
      const rows = await tx
        .select({ groupId: iommuGroups.groupId, devices: iommuGroups.devices })
        .from(iommuGroups)
        .where(eq(iommuGroups.hostId, hostId))
        .orderBy(iommuGroups.groupId);
      expect(rows).toEqual(next.map((group) => ({ groupId: group.id, devices: group.devices })));
      expect(await syncIommuGroups(tx, hostId, [])).toEqual({ written: 0, deleted: 3 });
    }));

  it('syncHostLabels rewrites changed values only and deletes removed keys', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx);
      const labels = { rack: 'r1', 'example.com/tier': 'gpu', 'with "quote"': 'x' };
      expect(await syncHostLabels(tx, hostId, labels)).toEqual({ written: 3, deleted: 0 });
      expect(await syncHostLabels(tx, hostId, labels)).toEqual({ written: 0, deleted: 0 });
      expect(await syncHostLabels(tx, hostId, { rack: 'r2', 'with "quote"': 'x' })).toEqual({
        written: 1,
        deleted: 1,
      });
      const rows = await tx
        .select({ key: hostLabels.key, value: hostLabels.value })
        .from(hostLabels)
        .where(eq(hostLabels.hostId, hostId))
        .orderBy(hostLabels.key);
      expect(rows).toEqual([
        { key: 'rack', value: 'r2' },
        { key: 'with "quote"', value: 'x' },
      ]);
    }));

  it('each test ran in a rolled-back transaction: the database is empty again', async () => {
    const [row] = await handle().db.select({ n: count() }).from(hosts);
    expect(row?.n).toBe(0);
  });
});
