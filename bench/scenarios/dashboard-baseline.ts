// The dashboard's queries as they were before the per-host rollups (issue 7): the direct
// aggregates over the devices table, kept verbatim as the baseline dashboard-queries measures
// ours against, and as the reference its answers must equal. Only the imports differ: the web
// app's internal helpers are restated below, its types come from its exported functions. Issue 17
// added the in-use status (counted apart, with the device's holder, searchable by VM): restated
// here over the devices table the same way, so the answers still compare.
import { deviceHolderSchema } from '@vfio-fleet/core';
import type { Database } from '@vfio-fleet/db';
import type { fleetCapacity, fleetSummary, searchDevices } from '@vfio-fleet/web';
import { type SQL, sql } from 'drizzle-orm';

type FleetSummary = Awaited<ReturnType<typeof fleetSummary>>;
type FleetCapacity = Awaited<ReturnType<typeof fleetCapacity>>;
type CapacityType = FleetCapacity['types'][number];
type CapacityCounts = FleetCapacity['totals'];
type CapacityInput = NonNullable<Parameters<typeof fleetCapacity>[1]>;
type DeviceSearchInput = Parameters<typeof searchDevices>[1];
type DeviceSearchPage = Awaited<ReturnType<typeof searchDevices>>;
type DeviceSearchRow = DeviceSearchPage['items'][number];
type LabelFilter = Record<string, string>;

type DeviceView = Omit<DeviceSearchRow, 'hostname' | 'hostState'>;
type ReadinessReason = DeviceView['reasons'][number];

function decodeCursor(cursor: string | null | undefined, length: number): unknown[] | null {
  if (cursor === null || cursor === undefined || cursor === '') return null;
  const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!Array.isArray(parsed) || parsed.length !== length) throw new Error('invalid cursor');
  return parsed;
}
function page<T>(
  rows: T[],
  limit: number,
  keyOf: (row: T) => unknown[],
): { items: T[]; nextCursor: string | null } {
  const items = rows.slice(0, limit);
  const last = items[items.length - 1];
  return {
    items,
    nextCursor:
      rows.length > limit && last !== undefined
        ? Buffer.from(JSON.stringify(keyOf(last)), 'utf8').toString('base64url')
        : null,
  };
}

/** As devices.search answers a list: only each row's first (most severe) reason. */
const DEVICE_COLUMNS_FIRST_REASON = sql`d.host_id, d.address, d.vendor_id, d.device_id,
  d.vendor_name, d.device_name, d.class_name, d.class_code, d.kind, d.driver, d.vfio_driver,
  d.iommu_group, d.numa_node, d.physfn, d.sriov_total_vfs, d.sriov_num_vfs, d.status,
  d.first_reason,
  CASE WHEN jsonb_array_length(d.reasons) > 0 THEN jsonb_build_array(d.reasons->0)
       ELSE '[]'::jsonb END AS reasons,
  d.updated_at, (d.facts->>'inUse') = 'true' AS in_use, d.facts->'holder' AS holder`;

function parseJson(value: unknown): unknown {
  // jsonb is parsed by both drivers; a string only shows up if a driver was configured not to.
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return null;
  }
}

function deviceView(r: Record<string, unknown>): DeviceView {
  const reasons = parseJson(r.reasons);
  const status = String(r.status);
  const holder = parseJson(r.holder);
  return {
    hostId: String(r.host_id),
    address: String(r.address),
    vendorId: String(r.vendor_id),
    deviceId: String(r.device_id),
    vendorName: toStringOrNull(r.vendor_name),
    deviceName: toStringOrNull(r.device_name),
    className: toStringOrNull(r.class_name),
    classCode: String(r.class_code),
    kind: String(r.kind),
    driver: toStringOrNull(r.driver),
    vfioDriver: toStringOrNull(r.vfio_driver),
    iommuGroup: toIntOrNull(r.iommu_group),
    numaNode: toIntOrNull(r.numa_node),
    physfn: toStringOrNull(r.physfn),
    sriovTotalVfs: toIntOrNull(r.sriov_total_vfs),
    sriovNumVfs: toIntOrNull(r.sriov_num_vfs),
    status: status === 'in-use' || status === 'bound' || status === 'ready' ? status : 'blocked',
    inUse: r.in_use === true,
    holder: deviceHolderSchema
      .nullable()
      .catch(null)
      .parse(holder ?? null),
    firstReason: toStringOrNull(r.first_reason),
    // Stored by ingest from core's assessment, so already of this shape.
    reasons: Array.isArray(reasons) ? (reasons as ReadinessReason[]) : [],
    updatedAt: toIso(r.updated_at),
  };
}

const TOP_REASONS = 10;
const ATTENTION_LIMIT = 20;

function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  const rows = (result as { rows?: unknown }).rows;
  return Array.isArray(rows) ? (rows as T[]) : [];
}
function toInt(value: unknown): number {
  if (typeof value === 'number') return value;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value === 'string' && value !== '') return Number(value);
  return 0;
}
function toIntOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : toInt(value);
}
function toIso(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  const date = value instanceof Date ? value : new Date(String(value));
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}
function toStringOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}
function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}
function allOf(conditions: readonly (SQL | undefined)[]): SQL {
  const present = conditions.filter((c): c is SQL => c !== undefined);
  if (present.length === 0) return sql`TRUE`;
  return sql.join(
    present.map((c) => sql`(${c})`),
    sql` AND `,
  );
}
function hostHasLabels(hostId: SQL, labels: LabelFilter | undefined): SQL | undefined {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return undefined;
  return sql.join(
    entries.map(
      ([key, value]) =>
        sql`EXISTS (SELECT 1 FROM host_labels l WHERE l.host_id = ${hostId} AND l.key = ${key} AND l.value = ${value})`,
    ),
    sql` AND `,
  );
}
function boundToVfio(d: SQL): SQL {
  return sql`(${d}.driver LIKE 'vfio%' OR ${d}.driver LIKE '%vfio_pci' OR (${d}.vfio_driver IS NOT NULL AND ${d}.driver = ${d}.vfio_driver))`;
}

export async function baselineSummary(
  db: Database,
  input: { labels?: LabelFilter } = {},
): Promise<FleetSummary> {
  const hostFilter = allOf([hostHasLabels(sql`h.id`, input.labels)]);
  const [hostCounts] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT count(*) FILTER (WHERE h.state = 'online')::int AS online,
             count(*) FILTER (WHERE h.state = 'offline')::int AS offline,
             count(*)::int AS total
      FROM hosts h WHERE ${hostFilter}`),
  );
  const [deviceCounts] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT count(*) FILTER (WHERE d.status = 'in-use')::int AS in_use,
             count(*) FILTER (WHERE d.status = 'bound')::int AS bound,
             count(*) FILTER (WHERE d.status = 'ready')::int AS ready,
             count(*) FILTER (WHERE d.status = 'blocked')::int AS blocked,
             count(*)::int AS total
      FROM devices d JOIN hosts h ON h.id = d.host_id WHERE ${hostFilter}`),
  );
  const reasons = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT d.first_reason AS code, count(*)::int AS count,
             -- One device's message and remedy together: min over [message, remedy] pairs, so
             -- the remedy shown is the one for the message shown.
             (min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']))[1] AS message,
             (min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']))[2] AS remedy
      FROM devices d JOIN hosts h ON h.id = d.host_id
      WHERE d.status = 'blocked' AND d.first_reason IS NOT NULL AND ${hostFilter}
      GROUP BY d.first_reason
      ORDER BY count(*) DESC, d.first_reason
      LIMIT ${TOP_REASONS}`),
  );
  const attention = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT h.id, h.hostname, h.state, h.last_seen_at, h.iommu_enabled,
             jsonb_array_length(h.problems)::int AS problem_count,
             h.problems -> 0 ->> 'message' AS first_problem
      FROM hosts h
      WHERE (jsonb_array_length(h.problems) > 0 OR NOT h.iommu_enabled) AND ${hostFilter}
      ORDER BY (NOT h.iommu_enabled) DESC, jsonb_array_length(h.problems) DESC, h.hostname, h.id
      LIMIT ${ATTENTION_LIMIT}`),
  );
  return {
    hosts: {
      online: toInt(hostCounts?.online),
      offline: toInt(hostCounts?.offline),
      total: toInt(hostCounts?.total),
    },
    devices: {
      inUse: toInt(deviceCounts?.in_use),
      bound: toInt(deviceCounts?.bound),
      ready: toInt(deviceCounts?.ready),
      blocked: toInt(deviceCounts?.blocked),
      total: toInt(deviceCounts?.total),
    },
    topBlockingReasons: reasons.map((r) => ({
      code: String(r.code),
      count: toInt(r.count),
      message: toStringOrNull(r.message),
      remedy: toStringOrNull(r.remedy),
    })),
    hostsNeedingAttention: attention.map((h) => ({
      hostId: String(h.id),
      hostname: String(h.hostname),
      state: String(h.state),
      lastSeenAt: toIso(h.last_seen_at),
      iommuEnabled: h.iommu_enabled === true,
      problemCount: toInt(h.problem_count),
      firstProblem: toStringOrNull(h.first_problem),
    })),
  };
}

export async function baselineCapacity(
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
             count(*) FILTER (WHERE d.status = 'in-use')::int AS in_use,
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
      inUse: sum.inUse + t.inUse,
      vfHeadroom: sum.vfHeadroom + t.vfHeadroom,
    }),
    { total: 0, bound: 0, ready: 0, blocked: 0, inUse: 0, vfHeadroom: 0 },
  );
  return { totals, types: list };
}

export async function baselineSearch(
  db: Database,
  input: DeviceSearchInput,
): Promise<DeviceSearchPage> {
  const after = decodeCursor(input.cursor, 3);
  const q = input.q?.trim();
  const pattern = q === undefined || q === '' ? undefined : containsPattern(q);
  const hostSearch = input.hostSearch?.trim() || undefined;
  const where = allOf([
    pattern === undefined
      ? undefined
      : sql`(d.vendor_name ILIKE ${pattern} OR d.device_name ILIKE ${pattern}
            OR d.class_name ILIKE ${pattern} OR d.address ILIKE ${pattern}
            OR (d.vendor_id || ':' || d.device_id) ILIKE ${pattern}
            OR (d.status = 'in-use' AND (d.facts->'holder'->>'vm' ILIKE ${pattern}
                OR d.facts->'holder'->>'command' ILIKE ${pattern})))`,
    input.vendorId === undefined ? undefined : sql`d.vendor_id = ${input.vendorId}`,
    input.deviceId === undefined ? undefined : sql`d.device_id = ${input.deviceId}`,
    input.classPrefix === undefined ? undefined : sql`d.class_code LIKE ${`${input.classPrefix}%`}`,
    input.driver === undefined ? undefined : sql`d.driver = ${input.driver}`,
    input.status === undefined ? undefined : sql`d.status = ${input.status}`,
    input.reason === undefined ? undefined : sql`d.first_reason = ${input.reason}`,
    input.hostId === undefined ? undefined : sql`d.host_id = ${input.hostId}::uuid`,
    hostSearch === undefined ? undefined : sql`h.hostname ILIKE ${containsPattern(hostSearch)}`,
    hostHasLabels(sql`d.host_id`, input.labels),
    after === null
      ? undefined
      : sql`(h.hostname, d.host_id, d.address) > (${String(after[0])}, ${String(after[1])}::uuid, ${String(after[2])})`,
  ]);
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT ${DEVICE_COLUMNS_FIRST_REASON}, h.hostname, h.state AS host_state
      FROM devices d JOIN hosts h ON h.id = d.host_id
      WHERE ${where}
      ORDER BY h.hostname, d.host_id, d.address
      LIMIT ${input.limit + 1}`),
  );
  const result = page(
    rows.map((r) => ({
      ...deviceView(r),
      hostname: String(r.hostname),
      hostState: String(r.host_state),
    })),
    input.limit,
    (row) => [row.hostname, row.hostId, row.address],
  );
  return result;
}
