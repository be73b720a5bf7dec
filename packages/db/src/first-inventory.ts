/**
 * A host's first stored inventory, in one statement.
 *
 * A host that holds no device, group or rollup row yet (just enrolled, or its inventory was
 * cleared) has nothing to compare with, update or delete: the upserts' ON CONFLICT checks, the
 * deletes of what is no longer reported and the rollups read back from `devices` are all work for
 * nothing, and on a fleet onboarding thousands of hosts at once they are a large part of the
 * database's time (measured per 200-device host: the ON CONFLICT alone about 2 ms of 8). Here the
 * devices, groups and labels are plain INSERTs in one statement, whose rollup rows aggregate the
 * device rows the same statement inserts (RETURNING), with the same SQL syncHostRollups runs.
 *
 * "Holds nothing" is read when the caller locks the host row (hostInventoryEmptySql in that
 * statement's RETURNING). Under READ COMMITTED, a statement that waited for the lock still reads
 * with the snapshot it started with, so a transaction that stored the same host meanwhile can be
 * missed; its rows then make these INSERTs fail with a unique violation, and the caller retries
 * with the upserts (isUniqueViolation). Nothing is written twice and nothing is lost.
 */
import type { Device, IommuGroup } from '@vfio-fleet/core';
import { type SQL, sql } from 'drizzle-orm';
import type { Database } from './client';
import {
  DEVICES_INSERT_COLUMNS,
  deviceRowsFromJsonb,
  groupRowsFromJsonb,
  groupsById,
  rowsOf,
  textArrayLiteral,
} from './devices';
import {
  HOST_BLOCKING_REASONS_COLUMNS,
  HOST_DEVICE_STATS_COLUMNS,
  ROLLUP_DEVICE_COLUMNS,
  reasonStatsRows,
  typeStatsRows,
} from './rollups';

/**
 * True when the host holds no device, IOMMU group or rollup row: what insertFirstInventory
 * needs. (Labels may exist: they are kept by the agent's configuration, not by its inventory, and
 * insertFirstInventory syncs them.) Each test is one primary-key probe.
 */
export function hostInventoryEmptySql(hostId: string): SQL<boolean> {
  return sql<boolean>`(NOT EXISTS (SELECT 1 FROM devices WHERE host_id = ${hostId}::uuid)
    AND NOT EXISTS (SELECT 1 FROM iommu_groups WHERE host_id = ${hostId}::uuid)
    AND NOT EXISTS (SELECT 1 FROM host_device_stats WHERE host_id = ${hostId}::uuid)
    AND NOT EXISTS (SELECT 1 FROM host_blocking_reasons WHERE host_id = ${hostId}::uuid))`;
}

export interface FirstInventory {
  devices: readonly Device[];
  groups: readonly IommuGroup[];
  labels: Readonly<Record<string, string>>;
}

/**
 * Inserts a host's devices, IOMMU groups and rollup rows, and makes its labels exactly `labels`,
 * in one statement; returns how many device rows it wrote. Only for a host for which
 * hostInventoryEmptySql held: otherwise it fails with a unique violation and writes nothing.
 */
export async function insertFirstInventory(
  tx: Database,
  hostId: string,
  inventory: FirstInventory,
): Promise<{ devicesWritten: number }> {
  const deviceRows = deviceRowsFromJsonb(hostId, inventory.devices);
  const groupRows = groupRowsFromJsonb(hostId, groupsById(inventory.groups));
  // Data-modifying WITH clauses all run, to completion, whether or not the query reads them.
  const result = await tx.execute(sql`
    WITH ${
      deviceRows === null
        ? sql`new_devices AS (SELECT ${ROLLUP_DEVICE_COLUMNS} FROM devices WHERE FALSE)`
        : sql`new_devices AS (
            INSERT INTO devices (${DEVICES_INSERT_COLUMNS}) ${deviceRows}
            RETURNING ${ROLLUP_DEVICE_COLUMNS})`
    },
    ${
      groupRows === null
        ? sql`new_groups AS (SELECT 1)`
        : sql`new_groups AS (INSERT INTO iommu_groups (host_id, group_id, devices) ${groupRows})`
    },
    type_stats AS (
      INSERT INTO host_device_stats (${HOST_DEVICE_STATS_COLUMNS})
      ${typeStatsRows(sql`new_devices`, sql`TRUE`)}),
    reason_stats AS (
      INSERT INTO host_blocking_reasons (${HOST_BLOCKING_REASONS_COLUMNS})
      ${reasonStatsRows(sql`new_devices`, sql`TRUE`)}),
    labels_gone AS (
      DELETE FROM host_labels
      WHERE host_id = ${hostId}::uuid
        AND key <> ALL(${textArrayLiteral(Object.keys(inventory.labels))}::text[])),
    labels_set AS (
      INSERT INTO host_labels (host_id, key, value)
      SELECT ${hostId}::uuid, l.key, l.value
      FROM jsonb_each_text(${JSON.stringify(inventory.labels)}::jsonb) AS l(key, value)
      ON CONFLICT (host_id, key) DO UPDATE SET value = excluded.value
      WHERE host_labels.value IS DISTINCT FROM excluded.value)
    SELECT (SELECT count(*) FROM new_devices)::int AS devices`);
  const [row] = rowsOf<{ devices: number }>(result);
  return { devicesWritten: row?.devices ?? 0 };
}
