/**
 * fleet.capacity: what can be passed through, by device type (vendor:device with its pci.ids
 * name): total, bound to a vfio driver, ready, blocked, in use by a VM, the SR-IOV VF headroom of the type's
 * physical functions, and optionally the split by NUMA node and by the value of one host label
 * (rack, cluster, role). One aggregate statement (GROUPING SETS gives the per-type, per-type-and-node
 * and per-type-and-label-value rows together) over host_device_stats, the per-host rollup of the
 * devices that ingest keeps (one row per host, type and NUMA node: ~10 per host rather than
 * ~200), so the figures are those of the devices table at a tenth of the rows; the code below
 * only nests rows.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { hostHasLabels, type LabelFilter } from './filters';
import {
  allOf,
  containsPattern,
  IN_USE_FROM_STATS,
  rowsOf,
  toInt,
  toIntOrNull,
  toStringOrNull,
} from './sql-rows';

export interface CapacityCounts {
  total: number;
  /** Bound to a vfio driver (vfio-pci or a variant), whatever the group's readiness. */
  bound: number;
  ready: number;
  blocked: number;
  /** Held by a VM: on vfio (so among `bound`) but not free to hand out. */
  inUse: number;
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

/**
 * Natural order of label values (rack r2 before r10). One collator for every comparison:
 * localeCompare with options builds a new one per call, which cost ~20 ms per response of a few
 * hundred label values.
 */
const naturalOrder = new Intl.Collator('en', { numeric: true });

export async function fleetCapacity(
  db: Database,
  input: CapacityInput = {},
): Promise<FleetCapacity> {
  const hostSearch = input.hostSearch?.trim() || undefined;
  const where = allOf([
    hostHasLabels(sql`s.host_id`, input.labels),
    input.hostIds === undefined
      ? undefined
      : input.hostIds.length === 0
        ? sql`FALSE`
        : sql`s.host_id IN (${sql.join(
            input.hostIds.map((id) => sql`${id}::uuid`),
            sql`, `,
          )})`,
    hostSearch === undefined
      ? undefined
      : sql`EXISTS (SELECT 1 FROM hosts h WHERE h.id = s.host_id AND h.hostname ILIKE ${containsPattern(hostSearch)})`,
  ]);
  const byNuma = input.groupBy === 'numa';
  const labelKey = input.labelKey;
  // host_labels' key is (host_id, key): the LEFT JOIN adds at most one row per rollup row.
  const labelJoin =
    labelKey === undefined
      ? sql``
      : sql`LEFT JOIN host_labels lv ON lv.host_id = s.host_id AND lv.key = ${labelKey}`;
  // First one pass over the rollup rows (one per host, type and NUMA node) down to one row per
  // type and whichever of node and label value are asked for: a plain hash aggregate. The
  // GROUPING SETS then run over those few hundred rows rather than hashing every rollup row once
  // per set, which halved the by-NUMA-and-rack case at 5,000 hosts.
  const inner = sql`
      SELECT s.vendor_id, s.device_id
             ${byNuma ? sql`, s.numa_node` : sql``}
             ${labelKey !== undefined ? sql`, lv.value AS label_value` : sql``},
             max(s.vendor_name) AS vendor_name, max(s.device_name) AS device_name,
             max(s.class_name) AS class_name,
             count(*)::int AS type_rows, sum(s.type_hosts)::int AS type_hosts,
             sum(s.total)::int AS total, sum(s.vfio_bound)::int AS bound,
             sum(s.ready)::int AS ready, sum(s.blocked)::int AS blocked,
             ${IN_USE_FROM_STATS} AS in_use, sum(s.vf_headroom)::int AS vf_headroom
      FROM host_device_stats s ${labelJoin}
      WHERE ${where}
      GROUP BY s.vendor_id, s.device_id
               ${byNuma ? sql`, s.numa_node` : sql``}
               ${labelKey !== undefined ? sql`, lv.value` : sql``}`;
  // grouping(x) = 1 on rows where x is aggregated away: the per-type row has 1 for both; a
  // per-node row has numa 0, a per-label-value row has label 0.
  const sets = [
    sql`(g.vendor_id, g.device_id)`,
    ...(byNuma ? [sql`(g.vendor_id, g.device_id, g.numa_node)`] : []),
    ...(labelKey !== undefined ? [sql`(g.vendor_id, g.device_id, g.label_value)`] : []),
  ];
  const groupBy =
    sets.length === 1
      ? sql`g.vendor_id, g.device_id`
      : sql`GROUPING SETS (${sql.join(sets, sql`, `)})`;
  // A host has one rollup row per (type, node), and type_hosts is 1 on exactly one of its rows
  // per type: so a per-node group counts its hosts by rows, the others by type_hosts — the
  // figure count(DISTINCT host_id) gave over devices, without the sort DISTINCT needs.
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT g.vendor_id, g.device_id,
             ${byNuma ? sql`g.numa_node, grouping(g.numa_node)::int AS numa_grouped` : sql`NULL::int AS numa_node, 1 AS numa_grouped`},
             ${labelKey !== undefined ? sql`g.label_value, grouping(g.label_value)::int AS label_grouped` : sql`NULL::text AS label_value, 1 AS label_grouped`},
             max(g.vendor_name) AS vendor_name, max(g.device_name) AS device_name,
             max(g.class_name) AS class_name,
             ${byNuma ? sql`CASE WHEN grouping(g.numa_node) = 0 THEN sum(g.type_rows) ELSE sum(g.type_hosts) END::int` : sql`sum(g.type_hosts)::int`} AS hosts,
             sum(g.total)::int AS total,
             sum(g.bound)::int AS bound,
             sum(g.ready)::int AS ready,
             sum(g.blocked)::int AS blocked,
             sum(g.in_use)::int AS in_use,
             sum(g.vf_headroom)::int AS vf_headroom
      FROM (${inner}) g
      GROUP BY ${groupBy}
      ORDER BY sum(g.total) DESC, g.vendor_id, g.device_id`),
  );
  const counts = (r: Record<string, unknown>): CapacityCounts => ({
    total: toInt(r.total),
    bound: toInt(r.bound),
    ready: toInt(r.ready),
    blocked: toInt(r.blocked),
    inUse: toInt(r.in_use),
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
      a.value === null ? 1 : b.value === null ? -1 : naturalOrder.compare(a.value, b.value),
    );
  }
  const list = [...types.values()];
  const totals = list.reduce<CapacityCounts>(
    (sum, t) => ({
      total: sum.total + t.total,
      bound: sum.bound + t.bound,
      ready: sum.ready + t.ready,
      blocked: sum.blocked + t.blocked,
      inUse: sum.inUse + t.inUse,
      vfHeadroom: sum.vfHeadroom + t.vfHeadroom,
    }),
    { total: 0, bound: 0, ready: 0, blocked: 0, inUse: 0, vfHeadroom: 0 },
  );
  return { totals, types: list };
}
