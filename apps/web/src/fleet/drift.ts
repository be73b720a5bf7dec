/**
 * fleet.drift: identical devices (same vendor:device and subsystem ids, i.e. the same board) that
 * resolve to different vfio drivers across the fleet — typically because their hosts run different
 * kernels, one whose modules.alias has a variant driver (`mlx5_vfio_pci`) and one without (plain
 * `vfio-pci`). A VM template that expects one driver then behaves differently per host, so the
 * overview lists these. One statement: the drifting types (limited) and, for each, the hosts per
 * (kernel release, vfio driver).
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { hostHasLabels, type LabelFilter } from './filters';
import { allOf, rowsOf, toInt, toStringOrNull } from './sql-rows';

export interface DriftVariant {
  /** Null: the agent could not read the kernel release. */
  kernelRelease: string | null;
  /** The PCI driver name written to driver_override (`vfio-pci`, `mlx5_vfio_pci`). */
  vfioDriver: string;
  hosts: number;
  devices: number;
}

export interface DriftType {
  vendorId: string;
  deviceId: string;
  subsystemVendorId: string | null;
  subsystemDeviceId: string | null;
  vendorName: string | null;
  deviceName: string | null;
  className: string | null;
  /** Hosts holding this device type, over all its variants. */
  hosts: number;
  /** Ordered by kernel release, then driver. */
  variants: DriftVariant[];
}

export interface FleetDrift {
  types: DriftType[];
  /** More drifting types exist than `limit`. */
  truncated: boolean;
}

export interface DriftInput {
  labels?: LabelFilter;
  limit?: number;
}

export const DRIFT_DEFAULT_LIMIT = 20;

export async function fleetDrift(db: Database, input: DriftInput = {}): Promise<FleetDrift> {
  const limit = input.limit ?? DRIFT_DEFAULT_LIMIT;
  const where = allOf([
    sql`d.vfio_driver IS NOT NULL`,
    hostHasLabels(sql`d.host_id`, input.labels),
  ]);
  // Subsystem ids may be absent (null); coalesce to '' so such devices still group and join.
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      WITH drifting AS (
        SELECT d.vendor_id, d.device_id,
               coalesce(d.subsystem_vendor_id, '') AS sv, coalesce(d.subsystem_device_id, '') AS sd,
               count(DISTINCT d.host_id)::int AS type_hosts
        FROM devices d
        WHERE ${where}
        GROUP BY d.vendor_id, d.device_id, coalesce(d.subsystem_vendor_id, ''), coalesce(d.subsystem_device_id, '')
        HAVING count(DISTINCT d.vfio_driver) > 1
        ORDER BY count(DISTINCT d.host_id) DESC, d.vendor_id, d.device_id, 3, 4
        LIMIT ${limit + 1}
      )
      SELECT t.vendor_id, t.device_id, t.sv, t.sd, t.type_hosts,
             h.kernel_release, d.vfio_driver,
             max(d.vendor_name) AS vendor_name, max(d.device_name) AS device_name,
             max(d.class_name) AS class_name,
             count(DISTINCT d.host_id)::int AS hosts, count(*)::int AS devices
      FROM drifting t
      JOIN devices d ON d.vendor_id = t.vendor_id AND d.device_id = t.device_id
        AND coalesce(d.subsystem_vendor_id, '') = t.sv AND coalesce(d.subsystem_device_id, '') = t.sd
      JOIN hosts h ON h.id = d.host_id
      WHERE ${where}
      GROUP BY t.vendor_id, t.device_id, t.sv, t.sd, t.type_hosts, h.kernel_release, d.vfio_driver
      ORDER BY t.type_hosts DESC, t.vendor_id, t.device_id, t.sv, t.sd,
               h.kernel_release NULLS LAST, d.vfio_driver`),
  );
  const types = new Map<string, DriftType>();
  for (const r of rows) {
    const key = `${r.vendor_id}:${r.device_id}:${r.sv}:${r.sd}`;
    let type = types.get(key);
    if (type === undefined) {
      type = {
        vendorId: String(r.vendor_id),
        deviceId: String(r.device_id),
        subsystemVendorId: r.sv === '' ? null : toStringOrNull(r.sv),
        subsystemDeviceId: r.sd === '' ? null : toStringOrNull(r.sd),
        vendorName: toStringOrNull(r.vendor_name),
        deviceName: toStringOrNull(r.device_name),
        className: toStringOrNull(r.class_name),
        hosts: toInt(r.type_hosts),
        variants: [],
      };
      types.set(key, type);
    }
    // The names are the same for every row of a type (pci.ids by vendor:device); keep any non-null.
    type.vendorName ??= toStringOrNull(r.vendor_name);
    type.deviceName ??= toStringOrNull(r.device_name);
    type.className ??= toStringOrNull(r.class_name);
    type.variants.push({
      kernelRelease: toStringOrNull(r.kernel_release),
      vfioDriver: String(r.vfio_driver),
      hosts: toInt(r.hosts),
      devices: toInt(r.devices),
    });
  }
  const list = [...types.values()];
  return { types: list.slice(0, limit), truncated: list.length > limit };
}
