/**
 * fleet.capacity: what can be passed through, by device type (vendor:device with its pci.ids
 * name): total, bound to a vfio driver, ready, blocked, the SR-IOV VF headroom of the type's
 * physical functions, and optionally the split by NUMA node. One aggregate statement (GROUPING
 * SETS gives the per-type and per-type-and-node rows together); the code below only nests rows.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { boundToVfio, hostHasLabels, type LabelFilter } from './filters';
import { allOf, rowsOf, toInt, toIntOrNull, toStringOrNull } from './sql-rows';

export interface CapacityCounts {
  total: number;
  /** Bound to a vfio driver (vfio-pci or a variant), whatever the group's readiness. */
  bound: number;
  ready: number;
  blocked: number;
  /** Sum over this type's SR-IOV physical functions of (total VFs - enabled VFs). */
  vfHeadroom: number;
}

export interface CapacityByNuma extends CapacityCounts {
  /** Null: the platform reports no NUMA node for these devices. */
  numaNode: number | null;
}

export interface CapacityType extends CapacityCounts {
  vendorId: string;
  deviceId: string;
  vendorName: string | null;
  deviceName: string | null;
  className: string | null;
  hosts: number;
  /** Present when grouped by NUMA node. */
  byNuma?: CapacityByNuma[];
}

export interface FleetCapacity {
  totals: CapacityCounts;
  types: CapacityType[];
}

export interface CapacityInput {
  labels?: LabelFilter;
  hostIds?: string[];
  groupBy?: 'type' | 'numa';
}

export async function fleetCapacity(
  db: Database,
  input: CapacityInput = {},
): Promise<FleetCapacity> {
  const where = allOf([
    hostHasLabels(sql`d.host_id`, input.labels),
    input.hostIds === undefined
      ? undefined
      : input.hostIds.length === 0
        ? sql`FALSE`
        : sql`d.host_id IN (${sql.join(
            input.hostIds.map((id) => sql`${id}::uuid`),
            sql`, `,
          )})`,
  ]);
  const byNuma = input.groupBy === 'numa';
  // grouping(d.numa_node) = 1 on the per-type rows, 0 on the per-node rows.
  const groupBy = byNuma
    ? sql`GROUPING SETS ((d.vendor_id, d.device_id), (d.vendor_id, d.device_id, d.numa_node))`
    : sql`d.vendor_id, d.device_id`;
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT d.vendor_id, d.device_id,
             ${byNuma ? sql`d.numa_node, grouping(d.numa_node)::int AS per_type` : sql`NULL::int AS numa_node, 1 AS per_type`},
             max(d.vendor_name) AS vendor_name, max(d.device_name) AS device_name,
             max(d.class_name) AS class_name,
             count(DISTINCT d.host_id)::int AS hosts,
             count(*)::int AS total,
             count(*) FILTER (WHERE ${boundToVfio(sql`d`)})::int AS bound,
             count(*) FILTER (WHERE d.status = 'ready')::int AS ready,
             count(*) FILTER (WHERE d.status = 'blocked')::int AS blocked,
             coalesce(sum(greatest(d.sriov_total_vfs - coalesce(d.sriov_num_vfs, 0), 0)), 0)::int AS vf_headroom
      FROM devices d
      WHERE ${where}
      GROUP BY ${groupBy}
      ORDER BY count(*) DESC, d.vendor_id, d.device_id`),
  );
  const counts = (r: Record<string, unknown>): CapacityCounts => ({
    total: toInt(r.total),
    bound: toInt(r.bound),
    ready: toInt(r.ready),
    blocked: toInt(r.blocked),
    vfHeadroom: toInt(r.vf_headroom),
  });
  const types = new Map<string, CapacityType>();
  for (const r of rows) {
    if (toInt(r.per_type) !== 1) continue;
    const key = `${r.vendor_id}:${r.device_id}`;
    types.set(key, {
      vendorId: String(r.vendor_id),
      deviceId: String(r.device_id),
      vendorName: toStringOrNull(r.vendor_name),
      deviceName: toStringOrNull(r.device_name),
      className: toStringOrNull(r.class_name),
      hosts: toInt(r.hosts),
      ...counts(r),
      ...(byNuma ? { byNuma: [] } : {}),
    });
  }
  if (byNuma) {
    for (const r of rows) {
      if (toInt(r.per_type) === 1) continue;
      types.get(`${r.vendor_id}:${r.device_id}`)?.byNuma?.push({
        numaNode: toIntOrNull(r.numa_node),
        ...counts(r),
      });
    }
    for (const type of types.values()) {
      type.byNuma?.sort((a, b) => (a.numaNode ?? -1) - (b.numaNode ?? -1));
    }
  }
  const list = [...types.values()];
  const totals = list.reduce<CapacityCounts>(
    (sum, t) => ({
      total: sum.total + t.total,
      bound: sum.bound + t.bound,
      ready: sum.ready + t.ready,
      blocked: sum.blocked + t.blocked,
      vfHeadroom: sum.vfHeadroom + t.vfHeadroom,
    }),
    { total: 0, bound: 0, ready: 0, blocked: 0, vfHeadroom: 0 },
  );
  return { totals, types: list };
}
