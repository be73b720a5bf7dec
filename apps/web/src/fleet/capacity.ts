/**
 * fleet.capacity: what can be passed through, by device type (vendor:device with its pci.ids
 * name): total, bound to a vfio driver, ready, blocked, the SR-IOV VF headroom of the type's
 * physical functions, and optionally the split by NUMA node and by the value of one host label
 * (rack, cluster, role). One aggregate statement (GROUPING SETS gives the per-type, per-type-and-node
 * and per-type-and-label-value rows together); the code below only nests rows.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { boundToVfio, hostHasLabels, type LabelFilter } from './filters';
import { allOf, containsPattern, rowsOf, toInt, toIntOrNull, toStringOrNull } from './sql-rows';

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

export interface CapacityByLabel extends CapacityCounts {
  /** The label's value; null: hosts without that label. */
  value: string | null;
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
  /** Present when split by a label key. */
  byLabel?: CapacityByLabel[];
}

export interface FleetCapacity {
  totals: CapacityCounts;
  types: CapacityType[];
}

export interface CapacityInput {
  labels?: LabelFilter;
  hostIds?: string[];
  groupBy?: 'type' | 'numa';
  /** Also split each type by this host label's value (`rack`, `cluster`, `role`). */
  labelKey?: string;
  /** Only hosts whose hostname contains this (case-insensitive). */
  hostSearch?: string;
}

export async function fleetCapacity(
  db: Database,
  input: CapacityInput = {},
): Promise<FleetCapacity> {
  const hostSearch = input.hostSearch?.trim() || undefined;
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
    hostSearch === undefined
      ? undefined
      : sql`EXISTS (SELECT 1 FROM hosts h WHERE h.id = d.host_id AND h.hostname ILIKE ${containsPattern(hostSearch)})`,
  ]);
  const byNuma = input.groupBy === 'numa';
  const labelKey = input.labelKey;
  // grouping(x) = 1 on rows where x is aggregated away: the per-type row has 1 for both; a
  // per-node row has numa 0, a per-label-value row has label 0.
  const sets = [
    sql`(d.vendor_id, d.device_id)`,
    ...(byNuma ? [sql`(d.vendor_id, d.device_id, d.numa_node)`] : []),
    ...(labelKey !== undefined ? [sql`(d.vendor_id, d.device_id, lv.value)`] : []),
  ];
  const groupBy =
    sets.length === 1
      ? sql`d.vendor_id, d.device_id`
      : sql`GROUPING SETS (${sql.join(sets, sql`, `)})`;
  // host_labels' key is (host_id, key): the LEFT JOIN adds at most one row per device.
  const labelJoin =
    labelKey === undefined
      ? sql``
      : sql`LEFT JOIN host_labels lv ON lv.host_id = d.host_id AND lv.key = ${labelKey}`;
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT d.vendor_id, d.device_id,
             ${byNuma ? sql`d.numa_node, grouping(d.numa_node)::int AS numa_grouped` : sql`NULL::int AS numa_node, 1 AS numa_grouped`},
             ${labelKey !== undefined ? sql`lv.value AS label_value, grouping(lv.value)::int AS label_grouped` : sql`NULL::text AS label_value, 1 AS label_grouped`},
             max(d.vendor_name) AS vendor_name, max(d.device_name) AS device_name,
             max(d.class_name) AS class_name,
             count(DISTINCT d.host_id)::int AS hosts,
             count(*)::int AS total,
             count(*) FILTER (WHERE ${boundToVfio(sql`d`)})::int AS bound,
             count(*) FILTER (WHERE d.status = 'ready')::int AS ready,
             count(*) FILTER (WHERE d.status = 'blocked')::int AS blocked,
             coalesce(sum(greatest(d.sriov_total_vfs - coalesce(d.sriov_num_vfs, 0), 0)), 0)::int AS vf_headroom
      FROM devices d ${labelJoin}
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
  const perType = (r: Record<string, unknown>) =>
    toInt(r.numa_grouped) === 1 && toInt(r.label_grouped) === 1;
  for (const r of rows) {
    if (!perType(r)) continue;
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
      ...(labelKey !== undefined ? { byLabel: [] } : {}),
    });
  }
  for (const r of rows) {
    if (perType(r)) continue;
    const type = types.get(`${r.vendor_id}:${r.device_id}`);
    if (toInt(r.numa_grouped) === 0) {
      type?.byNuma?.push({ numaNode: toIntOrNull(r.numa_node), ...counts(r) });
    } else {
      type?.byLabel?.push({ value: toStringOrNull(r.label_value), ...counts(r) });
    }
  }
  for (const type of types.values()) {
    type.byNuma?.sort((a, b) => (a.numaNode ?? -1) - (b.numaNode ?? -1));
    // Unlabelled hosts last; values in natural order so rack r2 comes before r10.
    type.byLabel?.sort((a, b) =>
      a.value === null
        ? 1
        : b.value === null
          ? -1
          : a.value.localeCompare(b.value, 'en', { numeric: true }),
    );
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
