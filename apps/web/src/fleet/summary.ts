/**
 * fleet.summary: the dashboard's first screen — hosts online/offline, devices by readiness, what
 * blocks passthrough most often, and which hosts need attention. Four aggregate statements, none
 * per host or per device: over hosts, and over the per-host rollups ingest keeps of the readiness
 * it assessed (host_device_stats, host_blocking_reasons), so a poll reads a few rows per host
 * rather than the fleet's every device row.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { hostHasLabels, type LabelFilter } from './filters';
import { allOf, IN_USE_FROM_STATS, rowsOf, toInt, toIso, toStringOrNull } from './sql-rows';

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
  /** inUse: held by a VM (on vfio, not free); bound counts the free ones only. */
  devices: { inUse: number; bound: number; ready: number; blocked: number; total: number };
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
  // Devices and reasons come from the per-host rollups that ingest maintains (rollups.ts): a
  // few rows per host instead of every device row, with the same figures.
  const statsFilter = allOf([hostHasLabels(sql`s.host_id`, input.labels)]);
  const reasonFilter = allOf([hostHasLabels(sql`r.host_id`, input.labels)]);
  // Independent statements, sent together: on PostgreSQL they run on separate pooled
  // connections at once, so a poll waits for the slowest rather than for the sum.
  const [hostResult, deviceResult, reasonResult, attentionResult] = await Promise.all([
    db.execute(sql`
      SELECT count(*) FILTER (WHERE h.state = 'online')::int AS online,
             count(*) FILTER (WHERE h.state = 'offline')::int AS offline,
             count(*)::int AS total
      FROM hosts h WHERE ${hostFilter}`),
    db.execute(sql`
      SELECT coalesce(sum(s.status_bound), 0)::int AS bound,
             coalesce(sum(s.ready), 0)::int AS ready,
             coalesce(sum(s.blocked), 0)::int AS blocked,
             coalesce(sum(s.total), 0)::int AS total,
             ${IN_USE_FROM_STATS} AS in_use
      FROM host_device_stats s WHERE ${statsFilter}`),
    db.execute(sql`
      SELECT r.reason AS code, sum(r.count)::int AS count,
             -- Each host's row holds its smallest [message, remedy] pair, so the smallest of
             -- those is the fleet's: one device's message and remedy, shown together.
             (min(ARRAY[r.message, r.remedy]))[1] AS message,
             (min(ARRAY[r.message, r.remedy]))[2] AS remedy
      FROM host_blocking_reasons r
      WHERE ${reasonFilter}
      GROUP BY r.reason
      ORDER BY sum(r.count) DESC, r.reason
      LIMIT ${TOP_REASONS}`),
    db.execute(sql`
      SELECT h.id, h.hostname, h.state, h.last_seen_at, h.iommu_enabled,
             jsonb_array_length(h.problems)::int AS problem_count,
             h.problems -> 0 ->> 'message' AS first_problem
      FROM hosts h
      WHERE (jsonb_array_length(h.problems) > 0 OR NOT h.iommu_enabled) AND ${hostFilter}
      ORDER BY (NOT h.iommu_enabled) DESC, jsonb_array_length(h.problems) DESC, h.hostname, h.id
      LIMIT ${ATTENTION_LIMIT}`),
  ]);
  const [hostCounts] = rowsOf<Record<string, unknown>>(hostResult);
  const [deviceCounts] = rowsOf<Record<string, unknown>>(deviceResult);
  const reasons = rowsOf<Record<string, unknown>>(reasonResult);
  const attention = rowsOf<Record<string, unknown>>(attentionResult);
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
