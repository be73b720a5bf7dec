/**
 * hostView.get: hosts.get plus, per device, what the host page explains and hosts.get leaves out:
 * the vfio driver selection (module, driver_override name, whether an alias matched or the
 * fallback applied, every candidate alias with its wildcard count, the explanation), the current
 * driver_override, the network interfaces the device would take away and who keeps its binding
 * across reboots (`keptBy`, empty from agents that predate it). Read from the stored
 * core Device (`devices.facts`) of the devices hosts.get returns only (at most
 * MAX_GROUP_DEVICES_SHOWN per group).
 */
import {
  type KeptBy,
  keptBySchema,
  type VfioSelection,
  vfioSelectionSchema,
} from '@vfio-fleet/core';
import { type Database, textArrayLiteral } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import type { DeviceView } from './device-view';
import { getHost, type HostDetail, type HostGroup } from './hosts';
import { rowsOf } from './sql-rows';

export interface DeviceExplained extends DeviceView {
  /** Null when the device has no modalias to match (core selected nothing). */
  vfio: VfioSelection | null;
  driverOverride: string | null;
  netInterfaces: string[];
  keptBy: KeptBy[];
}

export interface HostGroupExplained extends Omit<HostGroup, 'devices'> {
  devices: DeviceExplained[];
}

export interface HostViewDetail extends Omit<HostDetail, 'groups'> {
  groups: HostGroupExplained[];
}

/** The stored facts are written by ingest from a validated snapshot; parsed again so a bad row shows as "no selection" rather than breaking the page. */
const extrasSchema = z.object({
  vfio: vfioSelectionSchema.nullable().catch(null),
  driverOverride: z.string().nullable().catch(null),
  netInterfaces: z.array(z.string()).catch([]),
  keptBy: z.array(keptBySchema).catch([]),
});
type Extras = z.infer<typeof extrasSchema>;
const NO_EXTRAS: Extras = { vfio: null, driverOverride: null, netInterfaces: [], keptBy: [] };

function parseJson(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return null;
  }
}

export async function getHostView(db: Database, hostId: string): Promise<HostViewDetail> {
  const host = await getHost(db, hostId);
  const shown = host.groups.flatMap((group) => group.devices.map((d) => d.address));
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT d.address,
             jsonb_build_object(
               'vfio', d.facts->'vfio',
               'driverOverride', d.facts->'driverOverride',
               'netInterfaces', coalesce(d.facts->'netInterfaces', '[]'::jsonb),
               'keptBy', coalesce(d.facts->'keptBy', '[]'::jsonb)
             ) AS extras
      FROM devices d
      WHERE d.host_id = ${hostId}::uuid AND d.address = ANY(${textArrayLiteral(shown)}::text[])`),
  );
  const extras = new Map<string, Extras>();
  for (const row of rows) {
    const parsed = extrasSchema.safeParse(parseJson(row.extras));
    extras.set(String(row.address), parsed.success ? parsed.data : NO_EXTRAS);
  }
  return {
    ...host,
    groups: host.groups.map((group) => ({
      ...group,
      devices: group.devices.map((device) => ({
        ...device,
        ...(extras.get(device.address) ?? NO_EXTRAS),
      })),
    })),
  };
}
