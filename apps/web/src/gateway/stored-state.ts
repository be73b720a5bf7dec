/**
 * A host's stored inventory, checked on its way out of the database. Rows are validated when an
 * agent's message is stored, but a row damaged afterwards (a restore gone wrong, a hand edit, a
 * disk) must not be trusted as it is:
 * - a device whose stored document no longer parses is left out of `devices` and reported as an
 *   unreadable member of its IOMMU group (core's readiness/unreadable.ts), so a plan refuses its
 *   group instead of moving the rest of the group without it;
 * - a delta is never applied to damaged state: the agent is asked for a snapshot, which replaces
 *   the state (the stored hashes are dropped first, or a resend would be taken as unchanged).
 */
import {
  type Device,
  deviceSchema,
  type Host,
  type HostSnapshot,
  hostSchema,
  INVENTORY_SCHEMA_VERSION,
  type Problem,
  problemSchema,
} from '@vfio-fleet/core';
import { type Database, devices, hosts, iommuGroups } from '@vfio-fleet/db';
import { asc, eq } from 'drizzle-orm';
import { z } from 'zod';

/** Where such a member's problem says it came from (a problem's `source` is a path or a name). */
export const DAMAGED_RECORD_SOURCE = 'the fleet database';
const DAMAGED_RECORD =
  'its record in the fleet database is damaged (it no longer parses); the agent’s next snapshot replaces it';

const storedHostSchema = z.object({ host: hostSchema, problems: z.array(problemSchema) });

/** The stored host section and problems, or null when either no longer parses. */
export function checkStoredHost(
  host: unknown,
  problems: unknown,
): { host: Host; problems: Problem[] } | null {
  const parsed = storedHostSchema.safeParse({ host, problems });
  return parsed.success ? parsed.data : null;
}

export interface StoredDeviceRow {
  address: string;
  iommuGroup: number | null;
  facts: unknown;
}

/** The rows that parse, and a problem for each that does not (as an unreadable member). */
export function checkStoredDevices(rows: readonly StoredDeviceRow[]): {
  devices: Device[];
  damaged: Problem[];
} {
  const parsedDevices: Device[] = [];
  const damaged: Problem[] = [];
  for (const row of rows) {
    const parsed = deviceSchema.safeParse(row.facts);
    if (parsed.success && parsed.data.address === row.address) {
      parsedDevices.push(parsed.data);
    } else {
      damaged.push({
        source: DAMAGED_RECORD_SOURCE,
        message: DAMAGED_RECORD,
        device: { address: row.address, iommuGroup: row.iommuGroup, driver: null },
      });
    }
  }
  return { devices: parsedDevices, damaged };
}

export interface LoadedSnapshot {
  snapshot: HostSnapshot;
  /** True when any stored part failed its check (the snapshot then reports what it could). */
  damaged: boolean;
}

/**
 * The stored state of a host as a snapshot (devices in address order, as core keeps them): what
 * deltas apply to, and what the jobs service plans on. Null when the host section itself is
 * damaged: nothing can be planned or applied on it.
 */
export async function loadSnapshot(
  tx: Database,
  hostId: string,
  host: unknown,
  problems: unknown,
): Promise<LoadedSnapshot | null> {
  const checked = checkStoredHost(host, problems);
  if (checked === null) return null;
  const deviceRows = await tx
    .select({ address: devices.address, iommuGroup: devices.iommuGroup, facts: devices.facts })
    .from(devices)
    .where(eq(devices.hostId, hostId))
    // Canonical addresses are fixed-width lowercase hex, so text order is address order.
    .orderBy(asc(devices.address));
  const groupRows = await tx
    .select({ id: iommuGroups.groupId, devices: iommuGroups.devices })
    .from(iommuGroups)
    .where(eq(iommuGroups.hostId, hostId))
    .orderBy(asc(iommuGroups.groupId));
  const stored = checkStoredDevices(deviceRows);
  return {
    snapshot: {
      schemaVersion: INVENTORY_SCHEMA_VERSION,
      collectedAt: new Date().toISOString(),
      host: checked.host,
      devices: stored.devices,
      groups: groupRows,
      problems: [...checked.problems, ...stored.damaged],
    },
    damaged: stored.damaged.length > 0,
  };
}

/**
 * Drops the host's stored hashes, so the snapshot the agent sends next is stored whole (an
 * unchanged hash would otherwise keep the damaged rows), and says why the delta was not applied.
 */
export async function refuseDamagedState(
  tx: Database,
  hostId: string,
): Promise<{ applied: false; reason: string }> {
  await tx
    .update(hosts)
    .set({ inventoryHash: null, rawInventoryHash: null })
    .where(eq(hosts.id, hostId));
  return {
    applied: false,
    reason: 'the stored inventory of this host is damaged: a snapshot replaces it',
  };
}
