/**
 * fleet.summary: the dashboard's first screen — hosts online/offline, devices by readiness, what
 * blocks passthrough most often, and which hosts need attention. Plain SQL over the readiness
 * stored at ingest; four aggregate statements, none of them per host or per device.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { hostHasLabels, type LabelFilter } from './filters';
import { allOf, rowsOf, toInt, toIso, toStringOrNull } from './sql-rows';

export interface BlockingReason {
  code: string;
  count: number;
  /** One affected device's message and remedy, as a sample of what the reason says. */
  message: string | null;
  remedy: string | null;
}

export interface HostNeedingAttention {
  hostId: string;
  hostname: string;
  state: string;
  lastSeenAt: string | null;
  iommuEnabled: boolean;
  problemCount: number;
  firstProblem: string | null;
}

export interface FleetSummary {
  hosts: { online: number; offline: number; total: number };
  devices: { bound: number; ready: number; blocked: number; total: number };
  topBlockingReasons: BlockingReason[];
  hostsNeedingAttention: HostNeedingAttention[];
}

const TOP_REASONS = 10;
const ATTENTION_LIMIT = 20;

export async function fleetSummary(
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
      SELECT count(*) FILTER (WHERE d.status = 'bound')::int AS bound,
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
