// The per-host rollups fleet.summary and fleet.capacity read (host_device_stats,
// host_blocking_reasons): after every kind of ingest they must hold exactly the aggregate of the
// host's device rows, an ingest that changes one device must rewrite only the rollup rows it
// affects, and a deleted host takes its rollups with it. Real snapshots (fixture trees scanned by
// the agent bundle) stored by the server's own ingest, on PGlite and (with DATABASE_URL)
// PostgreSQL. Then devices.search against a plain scan of the rows: every page, in order.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { assessSnapshot, type HostSnapshot } from '@vfio-fleet/core';
import { type Database, hosts, rebuildAllRollups, rollupInputs } from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fleetCapacity } from '../src/fleet/capacity';
import { searchDevices } from '../src/fleet/devices';
import { fleetSummary } from '../src/fleet/summary';
import { drivers } from './helpers/harness';
import {
  type IngestedHost,
  ingestChange,
  ingestScenario,
  openTestDb,
  reingest,
} from './helpers/inventory';

function rowsOf(result: unknown): Record<string, unknown>[] {
  return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as Record<
    string,
    unknown
  >[];
}

/** Rollup rows of every host, and the same aggregate computed from devices right now. */
async function rollupsAndTruth(db: Database) {
  const stats = rowsOf(
    await db.execute(sql`
      SELECT host_id::text, vendor_id, device_id, numa_node, vendor_name, device_name, class_name,
             total, status_bound, vfio_bound, ready, blocked, vf_headroom
      FROM host_device_stats ORDER BY 1, 2, 3, 4`),
  );
  const statsTruth = rowsOf(
    await db.execute(sql`
      SELECT d.host_id::text, d.vendor_id, d.device_id, d.numa_node, max(d.vendor_name) AS vendor_name,
             max(d.device_name) AS device_name, max(d.class_name) AS class_name,
             count(*)::int AS total,
             count(*) FILTER (WHERE d.status = 'bound')::int AS status_bound,
             count(*) FILTER (WHERE d.driver LIKE 'vfio%' OR d.driver LIKE '%vfio_pci'
               OR (d.vfio_driver IS NOT NULL AND d.driver = d.vfio_driver))::int AS vfio_bound,
             count(*) FILTER (WHERE d.status = 'ready')::int AS ready,
             count(*) FILTER (WHERE d.status = 'blocked')::int AS blocked,
             coalesce(sum(greatest(d.sriov_total_vfs - coalesce(d.sriov_num_vfs, 0), 0)), 0)::int
               AS vf_headroom
      FROM devices d GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`),
  );
  const reasons = rowsOf(
    await db.execute(sql`
      SELECT host_id::text, reason, count, message, remedy FROM host_blocking_reasons
      ORDER BY 1, 2`),
  );
  const reasonsTruth = rowsOf(
    await db.execute(sql`
      SELECT d.host_id::text, d.first_reason AS reason, count(*)::int AS count,
             (min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']))[1] AS message,
             (min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']))[2] AS remedy
      FROM devices d WHERE d.status = 'blocked' AND d.first_reason IS NOT NULL
      GROUP BY 1, 2 ORDER BY 1, 2`),
  );
  // type_hosts: exactly one row per host and type carries the host.
  const typeHosts = rowsOf(
    await db.execute(sql`
      SELECT DISTINCT sum(type_hosts)::int AS n FROM host_device_stats
      GROUP BY host_id, vendor_id, device_id`),
  ).map((r) => r.n);
  return { stats, statsTruth, reasons, reasonsTruth, typeHosts };
}

async function expectRollupsMatchDevices(db: Database): Promise<void> {
  const { stats, statsTruth, reasons, reasonsTruth, typeHosts } = await rollupsAndTruth(db);
  expect(stats.length).toBeGreaterThan(0);
  expect(typeHosts).toEqual([1]);
  expect(stats).toEqual(statsTruth);
  expect(reasons).toEqual(reasonsTruth);
}

/** host_device_stats row key -> xmin (a new row version whenever the row is rewritten). */
async function statVersions(db: Database, hostId: string): Promise<Map<string, string>> {
  const rows = rowsOf(
    await db.execute(sql`
      SELECT vendor_id || ':' || device_id || '@' || coalesce(numa_node::text, '-') AS k,
             xmin::text AS v
      FROM host_device_stats WHERE host_id = ${hostId}::uuid`),
  );
  return new Map(rows.map((r) => [String(r.k), String(r.v)]));
}

describe.each(drivers)('per-host rollups on %s', (driver) => {
  let tmp: string;
  let db: Database;
  let close: () => Promise<void>;
  const fleet: IngestedHost[] = [];

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'web-rollups-'));
    const testDb = await openTestDb(driver);
    db = testDb.db;
    close = testDb.close;
    const scenarios = ['mlx5-vf', 'dual-gpu', 'critical-nvme-nic', 'iommu-off', 'vfio-bound'];
    for (const [i, scenario] of scenarios.entries()) {
      fleet.push(
        await ingestScenario(db, tmp, scenario as Parameters<typeof ingestScenario>[2], {
          hostname: `host-${i % 2 === 0 ? 'a' : 'b'}-${i}`,
          labels: { rack: `r${(i % 3) + 1}`, cluster: i % 2 === 0 ? 'a' : 'b' },
        }),
      );
    }
  }, 120_000);
  afterAll(async () => {
    await close?.();
    await rm(tmp, { recursive: true, force: true });
  });

  it('ingest fills them with exactly the aggregate of the device rows', async () => {
    await expectRollupsMatchDevices(db);
  });

  it('a delta rewrites only the rollup rows of the type it changed', async () => {
    const host = fleet[0];
    if (host === undefined) throw new Error('no host');
    const before = await statVersions(db, host.hostId);
    const next = structuredClone(host.snapshot);
    const gpu = next.devices.find((d) => d.kind === 'endpoint' && d.driver !== null);
    if (gpu === undefined) throw new Error('the scenario has no bound endpoint');
    gpu.driver = 'vfio-pci';
    gpu.driverModule = 'vfio_pci';
    const outcome = await ingestChange(db, host.hostId, host.snapshot, next, 1);
    expect(outcome.applied).toBe(true);
    await expectRollupsMatchDevices(db);
    const after = await statVersions(db, host.hostId);
    const changed = [...after.keys()].filter((k) => after.get(k) !== before.get(k));
    // The type of the rebound device; its group mates' readiness may change with it, so their
    // types may too, but not every row of the host.
    expect(changed).toContain(`${gpu.vendorId}:${gpu.deviceId}@${gpu.numaNode ?? '-'}`);
    expect(changed.length).toBeLessThan(after.size);
    host.snapshot = next;
  });

  it('a delta that changes nothing the rollups read does not recompute them', async () => {
    const host = fleet[1];
    if (host === undefined) throw new Error('no host');
    const next = structuredClone(host.snapshot);
    const device = next.devices.find((d) => d.kind === 'endpoint' && d.driverOverride === null);
    if (device === undefined) throw new Error('the scenario has no endpoint without an override');
    device.driverOverride = 'vfio-pci';
    // The premise, checked rather than assumed: no assessed device's rollup inputs change.
    const inputs = (s: HostSnapshot) =>
      assessSnapshot({ ...s, devices: s.devices.map(({ readiness: _r, ...f }) => f) }).devices.map(
        rollupInputs,
      );
    expect(inputs(next)).toEqual(inputs(host.snapshot));
    // A canary: a recomputation would put the true count back (an unchanged recomputation writes
    // no row, so row versions cannot tell).
    await db.execute(
      sql`UPDATE host_device_stats SET total = total + 1000 WHERE host_id = ${host.hostId}::uuid`,
    );
    const outcome = await ingestChange(db, host.hostId, host.snapshot, next, 1);
    expect(outcome.applied).toBe(true);
    if (outcome.applied) expect(outcome.result.devicesWritten).toBeGreaterThan(0);
    const canaries = rowsOf(
      await db.execute(
        sql`SELECT total FROM host_device_stats WHERE host_id = ${host.hostId}::uuid`,
      ),
    );
    expect(canaries.every((r) => Number(r.total) > 1000)).toBe(true);
    // The rows were right before the canary, so a rebuild gives back exactly the aggregate.
    await rebuildAllRollups(db);
    await expectRollupsMatchDevices(db);
    host.snapshot = next;
  });

  it('a device type that disappears loses its rollup row', async () => {
    const host = fleet[1];
    if (host === undefined) throw new Error('no host');
    const next = structuredClone(host.snapshot);
    const gone = next.devices.find((d) => d.kind === 'endpoint');
    if (gone === undefined) throw new Error('no endpoint');
    next.devices = next.devices.filter(
      (d) => !(d.vendorId === gone.vendorId && d.deviceId === gone.deviceId),
    );
    next.groups = next.groups.map((g) => ({
      ...g,
      devices: g.devices.filter((a) => next.devices.some((d) => d.address === a)),
    }));
    // fleet[1]'s labels (i = 1), resent as the agent would.
    await reingest(db, host, next, 5, { rack: 'r2', cluster: 'b' });
    await expectRollupsMatchDevices(db);
    expect([...(await statVersions(db, host.hostId)).keys()]).not.toContain(
      `${gone.vendorId}:${gone.deviceId}@${gone.numaNode ?? '-'}`,
    );
  });

  it('rebuildAllRollups writes what ingest wrote', async () => {
    const before = await rollupsAndTruth(db);
    await rebuildAllRollups(db);
    const after = await rollupsAndTruth(db);
    expect(after.stats).toEqual(before.stats);
    expect(after.reasons).toEqual(before.reasons);
  });

  it('summary and capacity answer from them, label filters included', async () => {
    const summary = await fleetSummary(db, {});
    const [truth] = rowsOf(
      await db.execute(sql`
        SELECT count(*)::int AS total, count(*) FILTER (WHERE status = 'blocked')::int AS blocked
        FROM devices`),
    );
    expect(summary.devices.total).toBe(truth?.total);
    expect(summary.devices.blocked).toBe(truth?.blocked);
    const rackA = await fleetSummary(db, { labels: { cluster: 'a' } });
    const [truthA] = rowsOf(
      await db.execute(sql`
        SELECT count(*)::int AS total FROM devices d
        JOIN host_labels l ON l.host_id = d.host_id AND l.key = 'cluster' AND l.value = 'a'`),
    );
    expect(rackA.devices.total).toBe(truthA?.total);
    const capacity = await fleetCapacity(db, { groupBy: 'numa', labelKey: 'rack' });
    expect(capacity.totals.total).toBe(truth?.total);
    for (const type of capacity.types) {
      const [t] = rowsOf(
        await db.execute(sql`
          SELECT count(DISTINCT host_id)::int AS hosts, count(*)::int AS total FROM devices
          WHERE vendor_id = ${type.vendorId} AND device_id = ${type.deviceId}`),
      );
      expect({ hosts: type.hosts, total: type.total }).toEqual(t);
      expect(type.byNuma?.reduce((n, g) => n + g.total, 0)).toBe(type.total);
      expect(type.byLabel?.reduce((n, g) => n + g.total, 0)).toBe(type.total);
    }
  });

  it('devices.search pages through every row once, in order, with and without filters', async () => {
    const all = rowsOf(
      await db.execute(sql`
        SELECT h.hostname, d.host_id::text AS host_id, d.address, d.status, d.vendor_name,
               d.device_name, d.class_name, d.vendor_id, d.device_id
        FROM devices d JOIN hosts h ON h.id = d.host_id
        ORDER BY h.hostname, d.host_id, d.address`),
    );
    const cases: {
      input: Omit<Parameters<typeof searchDevices>[1], 'limit' | 'cursor'>;
      keep: (r: Record<string, unknown>) => boolean;
    }[] = [
      { input: {}, keep: () => true },
      { input: { status: 'blocked' }, keep: (r) => r.status === 'blocked' },
      { input: { status: 'bound' }, keep: (r) => r.status === 'bound' },
      {
        input: { q: 'NVIDIA' },
        keep: (r) =>
          [r.vendor_name, r.device_name, r.class_name, r.address, `${r.vendor_id}:${r.device_id}`]
            .map((v) => String(v ?? '').toLowerCase())
            .some((v) => v.includes('nvidia')),
      },
      { input: { q: 'no such device' }, keep: () => false },
      { input: { labels: { cluster: 'b' } }, keep: (r) => String(r.hostname).startsWith('host-b') },
    ];
    for (const { input, keep } of cases) {
      for (const limit of [1, 7, 50]) {
        const seen: string[] = [];
        let cursor: string | null = null;
        for (let pages = 0; pages < 1000; pages++) {
          const page: Awaited<ReturnType<typeof searchDevices>> = await searchDevices(db, {
            ...input,
            limit,
            cursor,
          });
          expect(page.items.length).toBeLessThanOrEqual(limit);
          seen.push(...page.items.map((r) => `${r.hostId} ${r.address}`));
          cursor = page.nextCursor;
          if (cursor === null) break;
        }
        expect(seen, `${JSON.stringify(input)} limit ${limit}`).toEqual(
          all.filter(keep).map((r) => `${r.host_id} ${r.address}`),
        );
      }
    }
  }, 120_000);

  it('a deleted host takes its rollups with it', async () => {
    const host = fleet[2];
    if (host === undefined) throw new Error('no host');
    await db.delete(hosts).where(eq(hosts.id, host.hostId));
    const left = rowsOf(
      await db.execute(sql`
        SELECT (SELECT count(*) FROM host_device_stats WHERE host_id = ${host.hostId}::uuid)::int
                 + (SELECT count(*) FROM host_blocking_reasons WHERE host_id = ${host.hostId}::uuid)::int
               AS n`),
    );
    expect(left[0]?.n).toBe(0);
    await expectRollupsMatchDevices(db);
  });
});
