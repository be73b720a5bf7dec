/**
 * The per-host rollups behind the fleet dashboard (host_device_stats, host_blocking_reasons; see
 * schema.ts): what fleet.summary and fleet.capacity aggregate instead of the 1M-row devices table.
 *
 * They are computed by the database from the host's device rows, in the ingest transaction right
 * after those rows were written, rather than in JavaScript from the snapshot: the dashboard shows
 * max() of names and min() of [message, remedy] pairs, and only the database's own collation
 * orders text the way the aggregate over devices did, so computing them here keeps every figure
 * identical to it. Reading a host's ~200 rows back by primary key costs far less than the upsert
 * that wrote them, and an unchanged rollup row is not rewritten (IS DISTINCT FROM), so a delta
 * that flips one driver rewrites one or two small rows.
 */
import type { Device } from '@vfio-fleet/core';
import { type SQL, sql } from 'drizzle-orm';
import type { Database } from './client';

/**
 * A device (`d`, a devices row alias) bound to a vfio driver: `vfio-pci` and the variant drivers
 * (`mlx5_vfio_pci`, `nvgrace_gpu_vfio_pci`...), or whatever vfio driver core selected for it.
 * In LIKE `_` matches any one character, so '%vfio_pci' covers both `vfio_pci` and `vfio-pci`.
 * Defined here because the rollups count it; the web app's filters use the same expression.
 */
export function boundToVfioSql(d: SQL): SQL {
  return sql`(${d}.driver LIKE 'vfio%' OR ${d}.driver LIKE '%vfio_pci' OR (${d}.vfio_driver IS NOT NULL AND ${d}.driver = ${d}.vfio_driver))`;
}

/**
 * Everything of a device the rollup statements below read (through the devices row deviceRow()
 * derives), as one comparable string. A delta whose written devices all keep theirs, and that adds
 * or removes none, leaves every rollup row as it is: the steady state's typical delta (a
 * driver_override set, a reset method found) then skips syncHostRollups' four statements.
 * Keep in step with upsertTypeStats and upsertReasonStats.
 */
export function rollupInputs(device: Device): string {
  const first = device.readiness.reasons[0];
  return JSON.stringify([
    device.vendorId,
    device.deviceId,
    device.numaNode,
    device.names.vendor,
    device.names.device,
    device.names.className,
    device.readiness.status,
    device.driver,
    device.vfio?.driver ?? null,
    device.sriov?.totalVfs ?? null,
    device.sriov?.numVfs ?? null,
    first?.code ?? null,
    first?.message ?? null,
    first?.remedy ?? null,
  ]);
}

export interface RollupSyncResult {
  /** Rollup rows inserted or changed. */
  written: number;
  /** Rollup rows deleted (a type, node or reason the host no longer has). */
  deleted: number;
}

/** host_device_stats' columns in the order typeStatsRows produces them. */
export const HOST_DEVICE_STATS_COLUMNS = sql.raw(`host_id, vendor_id, device_id, numa_node,
  vendor_name, device_name, class_name, type_hosts, total, status_bound, vfio_bound, ready,
  blocked, vf_headroom`);

/**
 * The rollup rows of the device rows `d` of `relation` matching `scope`: `devices d` with one
 * host's condition in ingest, every host's when a bench or a repair fills them in bulk, and the
 * rows a host's first inventory has just inserted (insertFirstInventory, which cannot read them
 * back from `devices` in the statement that writes them). Same SQL every way, so each produces
 * exactly what the aggregate over devices gives.
 */
export function typeStatsRows(relation: SQL, scope: SQL): SQL {
  return sql`
    SELECT d.host_id, d.vendor_id, d.device_id, d.numa_node,
           max(d.vendor_name), max(d.device_name), max(d.class_name),
           CASE WHEN row_number() OVER (PARTITION BY d.host_id, d.vendor_id, d.device_id
                                        ORDER BY d.numa_node NULLS FIRST) = 1
                THEN 1 ELSE 0 END,
           count(*)::int,
           count(*) FILTER (WHERE d.status = 'bound')::int,
           count(*) FILTER (WHERE ${boundToVfioSql(sql`d`)})::int,
           count(*) FILTER (WHERE d.status = 'ready')::int,
           count(*) FILTER (WHERE d.status = 'blocked')::int,
           coalesce(sum(greatest(d.sriov_total_vfs - coalesce(d.sriov_num_vfs, 0), 0)), 0)::int
    FROM ${relation} d
    WHERE ${scope}
    GROUP BY d.host_id, d.vendor_id, d.device_id, d.numa_node`;
}

/** host_blocking_reasons' columns in the order reasonStatsRows produces them. */
export const HOST_BLOCKING_REASONS_COLUMNS = sql.raw('host_id, reason, count, message, remedy');

export function reasonStatsRows(relation: SQL, scope: SQL): SQL {
  return sql`
    SELECT g.host_id, g.first_reason, g.n, g.sample[1], g.sample[2]
    FROM (
      SELECT d.host_id, d.first_reason, count(*)::int AS n,
             -- As fleet.summary did over devices: one device's message and remedy together.
             min(ARRAY[d.reasons -> 0 ->> 'message', d.reasons -> 0 ->> 'remedy']) AS sample
      FROM ${relation} d
      WHERE d.status = 'blocked' AND d.first_reason IS NOT NULL AND ${scope}
      GROUP BY d.host_id, d.first_reason
    ) g`;
}

/**
 * The devices columns the rollup rows read: what a statement that inserts device rows returns so
 * that typeStatsRows and reasonStatsRows can aggregate them.
 */
export const ROLLUP_DEVICE_COLUMNS = sql.raw(`host_id, vendor_id, device_id, numa_node,
  vendor_name, device_name, class_name, status, driver, vfio_driver, sriov_total_vfs,
  sriov_num_vfs, first_reason, reasons`);

function upsertTypeStats(scope: SQL): SQL {
  return sql`
    INSERT INTO host_device_stats AS s (${HOST_DEVICE_STATS_COLUMNS})
    ${typeStatsRows(sql`devices`, scope)}
    ON CONFLICT ON CONSTRAINT host_device_stats_key DO UPDATE SET
      vendor_name = excluded.vendor_name, device_name = excluded.device_name,
      class_name = excluded.class_name, type_hosts = excluded.type_hosts, total = excluded.total,
      status_bound = excluded.status_bound, vfio_bound = excluded.vfio_bound,
      ready = excluded.ready, blocked = excluded.blocked, vf_headroom = excluded.vf_headroom
    WHERE (s.vendor_name, s.device_name, s.class_name, s.type_hosts, s.total, s.status_bound,
           s.vfio_bound, s.ready, s.blocked, s.vf_headroom)
      IS DISTINCT FROM (excluded.vendor_name, excluded.device_name, excluded.class_name,
           excluded.type_hosts, excluded.total, excluded.status_bound, excluded.vfio_bound, excluded.ready,
           excluded.blocked, excluded.vf_headroom)
    RETURNING 1`;
}

function upsertReasonStats(scope: SQL): SQL {
  return sql`
    INSERT INTO host_blocking_reasons AS r (${HOST_BLOCKING_REASONS_COLUMNS})
    ${reasonStatsRows(sql`devices`, scope)}
    ON CONFLICT (host_id, reason) DO UPDATE SET
      count = excluded.count, message = excluded.message, remedy = excluded.remedy
    WHERE (r.count, r.message, r.remedy)
      IS DISTINCT FROM (excluded.count, excluded.message, excluded.remedy)
    RETURNING 1`;
}

function rowCount(result: unknown): number {
  if (Array.isArray(result)) return result.length;
  const rows = (result as { rows?: unknown }).rows;
  return Array.isArray(rows) ? rows.length : 0;
}

/**
 * Makes the host's rollup rows match its device rows. Call it in the ingest transaction after
 * the devices were upserted and the removed ones deleted; a host whose devices did not change
 * may skip it (the rollups depend on the device rows only).
 */
export async function syncHostRollups(tx: Database, hostId: string): Promise<RollupSyncResult> {
  const scope = sql`d.host_id = ${hostId}::uuid`;
  let written = rowCount(await tx.execute(upsertTypeStats(scope)));
  written += rowCount(await tx.execute(upsertReasonStats(scope)));
  // Each subquery filters on the host alone, so it reads the host's ~200 rows by the primary key.
  // (Correlated NOT EXISTS on vendor and device let the planner pick the vendor/device index and
  // read that type's rows on every host of the fleet: quadratic over a cold ingest of 5,000 hosts.)
  let deleted = rowCount(
    await tx.execute(sql`
      DELETE FROM host_device_stats s
      WHERE s.host_id = ${hostId}::uuid
        AND (s.vendor_id, s.device_id, coalesce(s.numa_node, -2)) NOT IN (
          SELECT d.vendor_id, d.device_id, coalesce(d.numa_node, -2)
          FROM devices d WHERE d.host_id = ${hostId}::uuid)
      RETURNING 1`),
  );
  deleted += rowCount(
    await tx.execute(sql`
      DELETE FROM host_blocking_reasons r
      WHERE r.host_id = ${hostId}::uuid
        AND r.reason NOT IN (
          SELECT d.first_reason FROM devices d
          WHERE d.host_id = ${hostId}::uuid AND d.status = 'blocked' AND d.first_reason IS NOT NULL)
      RETURNING 1`),
  );
  return { written, deleted };
}

/**
 * Rebuilds every host's rollups from the devices table, in two statements: for bulk loads that
 * bypass ingest (bench seeding) and for repairing rollups after a manual edit of devices.
 */
export async function rebuildAllRollups(db: Database): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.execute(sql`DELETE FROM host_device_stats`);
    await tx.execute(sql`DELETE FROM host_blocking_reasons`);
    await tx.execute(upsertTypeStats(sql`TRUE`));
    await tx.execute(upsertReasonStats(sql`TRUE`));
  });
}
