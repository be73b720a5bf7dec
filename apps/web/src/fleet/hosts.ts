/**
 * hosts.list (device counts by status, search, label and state filters, three sort orders,
 * keyset-paginated) and hosts.get (one host with its labels, facts, problems, and its IOMMU groups
 * with their devices, at most MAX_GROUP_DEVICES_SHOWN each, and any active job).
 */
import type { Host, Problem } from '@vfio-fleet/core';
import type { Database, HostState } from '@vfio-fleet/db';
import { type SQL, sql } from 'drizzle-orm';
import { ServerError } from '../errors';
import { type AgentVersionStatus, agentVersionStatus } from './agent-version';
import { type CursorKey, type CursorPart, decodeCursor, page } from './cursor';
import { DEVICE_COLUMNS, type DeviceView, deviceView } from './device-view';
import { hostHasLabels, type LabelFilter } from './filters';
import { type ActiveJob, activeJobsOf } from './groups';
import { hostDistinguishers } from './same-hostname';
import { allOf, containsPattern, rowsOf, toInt, toIso, toStringOrNull } from './sql-rows';

export type HostSort = 'hostname' | 'lastSeen' | 'devices';

export interface HostListInput {
  search?: string;
  state?: HostState;
  labels?: LabelFilter;
  sort: HostSort;
  dir: 'asc' | 'desc';
  limit: number;
  cursor?: string | null;
}

export interface DeviceCounts {
  total: number;
  /** Held by a VM; `bound` counts the free vfio-bound ones only. */
  inUse: number;
  bound: number;
  ready: number;
  blocked: number;
}

export interface HostListItem {
  id: string;
  hostname: string;
  state: HostState;
  lastSeenAt: string | null;
  kernelRelease: string | null;
  cpuVendor: string | null;
  iommuEnabled: boolean;
  problemCount: number;
  labels: Record<string, string>;
  devices: DeviceCounts;
  /** What the agent said in its last hello; null before it reported one. */
  agentVersion: string | null;
  /** Its agent said at hello that it runs jobs; false or null (did not say): read-only. */
  allowRebind: boolean | null;
  /** Compared with the version this server ships. */
  agentVersionStatus: AgentVersionStatus;
  /** When another host reports the same hostname: a short id that tells them apart (same-hostname.ts). */
  distinguisher: string | null;
}

/** The sort key of each order, as a column of the inner query (comparable in a row comparison). */
const SORT_KEYS: Record<
  HostSort,
  { expr: SQL; part: CursorPart; cast: (v: CursorKey[number]) => SQL }
> = {
  hostname: { expr: sql`h.hostname`, part: 'text', cast: (v) => sql`${String(v)}::text` },
  // Microseconds since the epoch as bigint: a cursor holding an ISO string would lose PostgreSQL's
  // microseconds and skip or repeat rows; never-seen hosts sort as the epoch.
  lastSeen: {
    expr: sql`coalesce((extract(epoch FROM h.last_seen_at) * 1000000)::bigint, 0)`,
    part: 'integer',
    cast: (v) => sql`${String(v)}::bigint`,
  },
  devices: {
    expr: sql`coalesce(c.total, 0)::bigint`,
    part: 'integer',
    cast: (v) => sql`${String(v)}::bigint`,
  },
};

function labelsOf(value: unknown): Record<string, string> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]));
}

function booleanOrNull(value: unknown): boolean | null {
  return typeof value === 'boolean' ? value : null;
}

function countsOf(r: Record<string, unknown>): DeviceCounts {
  return {
    total: toInt(r.total),
    inUse: toInt(r.in_use),
    bound: toInt(r.bound),
    ready: toInt(r.ready),
    blocked: toInt(r.blocked),
  };
}

export async function listHosts(
  db: Database,
  input: HostListInput,
): Promise<{ items: HostListItem[]; nextCursor: string | null }> {
  const key = SORT_KEYS[input.sort];
  const after = decodeCursor(input.cursor, [key.part, 'uuid']);
  const search = input.search?.trim();
  const filters = allOf([
    search === undefined || search === ''
      ? undefined
      : sql`h.hostname ILIKE ${containsPattern(search)}`,
    input.state === undefined ? undefined : sql`h.state = ${input.state}`,
    hostHasLabels(sql`h.id`, input.labels),
  ]);
  const desc = input.dir === 'desc';
  const keyset =
    after === null
      ? sql`TRUE`
      : desc
        ? sql`(s.sort_key, s.id) < (${key.cast(after[0] ?? null)}, ${String(after[1])}::uuid)`
        : sql`(s.sort_key, s.id) > (${key.cast(after[0] ?? null)}, ${String(after[1])}::uuid)`;
  const order = desc ? sql`s.sort_key DESC, s.id DESC` : sql`s.sort_key ASC, s.id ASC`;
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT s.* FROM (
        SELECT h.id, h.hostname, h.state, h.last_seen_at, h.kernel_release, h.cpu_vendor,
               h.iommu_enabled, h.agent_version, h.allow_rebind, jsonb_array_length(h.problems)::int AS problem_count,
               coalesce(c.total, 0)::int AS total, coalesce(c.in_use, 0)::int AS in_use,
               coalesce(c.bound, 0)::int AS bound,
               coalesce(c.ready, 0)::int AS ready, coalesce(c.blocked, 0)::int AS blocked,
               (SELECT jsonb_object_agg(l.key, l.value) FROM host_labels l WHERE l.host_id = h.id) AS labels,
               ${key.expr} AS sort_key
        FROM hosts h
        LEFT JOIN LATERAL (
          SELECT count(*) AS total,
                 count(*) FILTER (WHERE d.status = 'in-use') AS in_use,
                 count(*) FILTER (WHERE d.status = 'bound') AS bound,
                 count(*) FILTER (WHERE d.status = 'ready') AS ready,
                 count(*) FILTER (WHERE d.status = 'blocked') AS blocked
          FROM devices d WHERE d.host_id = h.id
        ) c ON TRUE
        WHERE ${filters}
      ) s
      WHERE ${keyset}
      ORDER BY ${order}
      LIMIT ${input.limit + 1}`),
  );
  const items = rows.map((r) => ({
    row: {
      id: String(r.id),
      hostname: String(r.hostname),
      state: (r.state === 'online' ? 'online' : 'offline') as HostState,
      lastSeenAt: toIso(r.last_seen_at),
      kernelRelease: toStringOrNull(r.kernel_release),
      cpuVendor: toStringOrNull(r.cpu_vendor),
      iommuEnabled: r.iommu_enabled === true,
      problemCount: toInt(r.problem_count),
      labels: labelsOf(r.labels),
      devices: countsOf(r),
      agentVersion: toStringOrNull(r.agent_version),
      agentVersionStatus: agentVersionStatus(toStringOrNull(r.agent_version)),
      allowRebind: booleanOrNull(r.allow_rebind),
    } satisfies Omit<HostListItem, 'distinguisher'>,
    sortKey: typeof r.sort_key === 'number' ? r.sort_key : String(r.sort_key),
  }));
  const result = page(items, input.limit, (item) => [item.sortKey, item.row.id]);
  const pageRows = result.items.map((item) => item.row);
  const distinguishers = await hostDistinguishers(db, pageRows);
  return {
    items: pageRows.map((row) => ({ ...row, distinguisher: distinguishers.get(row.id) ?? null })),
    nextCursor: result.nextCursor,
  };
}

export interface HostGroup {
  /** Null collects the devices without an IOMMU group (IOMMU off). */
  group: number | null;
  /** The first MAX_GROUP_DEVICES_SHOWN of its devices, in address order. */
  devices: DeviceView[];
  /** All of its devices; more than `devices` holds when the group is larger than that. */
  deviceCount: number;
  activeJob: ActiveJob | null;
}

/**
 * Devices of one group that hosts.get (and the host page) returns. A group can hold the whole host
 * (4,096 devices at the protocol's limit, each with its reasons): the response would be tens of
 * megabytes, a card per device. The rest are counted, and listed by the devices page.
 */
export const MAX_GROUP_DEVICES_SHOWN = 64;

export interface HostDetail {
  id: string;
  agentId: string;
  hostname: string;
  machineId: string | null;
  state: HostState;
  lastSeenAt: string | null;
  connectedAt: string | null;
  kernelRelease: string | null;
  cpuVendor: string | null;
  iommuEnabled: boolean;
  interruptRemapping: string | null;
  agentVersion: string | null;
  agentVersionStatus: AgentVersionStatus;
  /** Its agent said at hello that it runs jobs; false or null (did not say): read-only. */
  allowRebind: boolean | null;
  /** When another host reports the same hostname: a short id that tells them apart (same-hostname.ts). */
  distinguisher: string | null;
  labels: Record<string, string>;
  /** The agent's host facts (cmdline, IOMMU units, vfio modules, critical devices...). */
  facts: Host | null;
  problems: Problem[];
  devices: DeviceCounts;
  groups: HostGroup[];
}

export async function getHost(db: Database, hostId: string): Promise<HostDetail> {
  const [host] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT h.*, (SELECT jsonb_object_agg(l.key, l.value) FROM host_labels l WHERE l.host_id = h.id) AS labels
      FROM hosts h WHERE h.id = ${hostId}::uuid`),
  );
  if (host === undefined) throw new ServerError('not-found', `no host ${hostId}`);
  // At most MAX_GROUP_DEVICES_SHOWN rows per group, with each group's size.
  const deviceRows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT * FROM (
        SELECT ${DEVICE_COLUMNS},
               row_number() OVER (PARTITION BY d.iommu_group ORDER BY d.address) AS group_rank,
               count(*) OVER (PARTITION BY d.iommu_group) AS group_size
        FROM devices d WHERE d.host_id = ${hostId}::uuid) d
      WHERE d.group_rank <= ${MAX_GROUP_DEVICES_SHOWN}
      ORDER BY d.iommu_group NULLS LAST, d.address`),
  );
  const [totals] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT count(*)::int AS total,
             count(*) FILTER (WHERE d.status = 'in-use')::int AS in_use,
             count(*) FILTER (WHERE d.status = 'bound')::int AS bound,
             count(*) FILTER (WHERE d.status = 'ready')::int AS ready,
             count(*) FILTER (WHERE d.status = 'blocked')::int AS blocked
      FROM devices d WHERE d.host_id = ${hostId}::uuid`),
  );
  const jobs = await activeJobsOf(db, hostId);
  const groups = new Map<number | null, HostGroup>();
  for (const row of deviceRows) {
    const device = deviceView(row);
    let group = groups.get(device.iommuGroup);
    if (group === undefined) {
      group = {
        group: device.iommuGroup,
        devices: [],
        deviceCount: toInt(row.group_size),
        activeJob: device.iommuGroup === null ? null : (jobs.get(device.iommuGroup) ?? null),
      };
      groups.set(device.iommuGroup, group);
    }
    group.devices.push(device);
  }
  const id = String(host.id);
  const hostname = String(host.hostname);
  const distinguisher = (await hostDistinguishers(db, [{ id, hostname }])).get(id) ?? null;
  return {
    id,
    agentId: String(host.agent_id),
    hostname,
    machineId: toStringOrNull(host.machine_id),
    state: host.state === 'online' ? 'online' : 'offline',
    lastSeenAt: toIso(host.last_seen_at),
    connectedAt: toIso(host.connected_at),
    kernelRelease: toStringOrNull(host.kernel_release),
    cpuVendor: toStringOrNull(host.cpu_vendor),
    iommuEnabled: host.iommu_enabled === true,
    interruptRemapping: toStringOrNull(host.interrupt_remapping),
    agentVersion: toStringOrNull(host.agent_version),
    agentVersionStatus: agentVersionStatus(toStringOrNull(host.agent_version)),
    allowRebind: booleanOrNull(host.allow_rebind),
    distinguisher,
    labels: labelsOf(host.labels),
    facts: (host.host ?? null) as Host | null,
    problems: Array.isArray(host.problems) ? (host.problems as Problem[]) : [],
    devices:
      totals === undefined
        ? { total: 0, inUse: 0, bound: 0, ready: 0, blocked: 0 }
        : countsOf(totals),
    groups: [...groups.values()],
  };
}
