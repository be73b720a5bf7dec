/** The API's view of one stored device row (raw SQL rows, snake_case, from either driver). */
import {
  type DeviceHolder,
  deviceHolderSchema,
  type ReadinessReason,
  type ReadinessStatus,
  readinessStatusSchema,
} from '@vfio-fleet/core';
import { sql } from 'drizzle-orm';
import { toIntOrNull, toIso, toStringOrNull } from './sql-rows';

export interface DeviceView {
  hostId: string;
  address: string;
  vendorId: string;
  deviceId: string;
  vendorName: string | null;
  deviceName: string | null;
  className: string | null;
  classCode: string;
  kind: string;
  driver: string | null;
  /** The vfio driver core selected for it (the module, e.g. `vfio_pci`, `mlx5_vfio_pci`). */
  vfioDriver: string | null;
  iommuGroup: number | null;
  numaNode: number | null;
  physfn: string | null;
  sriovTotalVfs: number | null;
  sriovNumVfs: number | null;
  status: ReadinessStatus;
  /** A user (a VM) holds it: nothing may unbind it (core's `in-use`). */
  inUse: boolean;
  /** Who holds it, as the agent read it from /proc; null when free or unknown. */
  holder: DeviceHolder | null;
  firstReason: string | null;
  reasons: ReadinessReason[];
  updatedAt: string | null;
}

const COLUMNS_BUT_REASONS = `d.host_id, d.address, d.vendor_id, d.device_id, d.vendor_name,
  d.device_name, d.class_name, d.class_code, d.kind, d.driver, d.vfio_driver, d.iommu_group,
  d.numa_node, d.physfn, d.sriov_total_vfs, d.sriov_num_vfs, d.status, d.first_reason,
  d.updated_at, (d.facts->>'inUse') = 'true' AS in_use, d.facts->'holder' AS holder`;

/** The columns DeviceView reads, from `devices d`. */
export const DEVICE_COLUMNS = sql.raw(`${COLUMNS_BUT_REASONS}, d.reasons`);

/**
 * DEVICE_COLUMNS with `reasons` cut to the first (most severe) one: what a list of many devices
 * shows (a page of 200 rows polled by every viewer must not carry all their reasons).
 */
export const DEVICE_COLUMNS_FIRST_REASON = sql.raw(`${COLUMNS_BUT_REASONS},
  CASE WHEN jsonb_array_length(d.reasons) > 0 THEN jsonb_build_array(d.reasons->0)
       ELSE '[]'::jsonb END AS reasons`);

function parseJson(value: unknown): unknown {
  // jsonb is parsed by both drivers; a string only shows up if a driver was configured not to.
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value);
  } catch {
    return null;
  }
}

/** The stored holder, parsed: an agent-supplied jsonb is never trusted to have its shape. */
function holderOf(value: unknown): DeviceHolder | null {
  const parsed = deviceHolderSchema.nullable().safeParse(parseJson(value) ?? null);
  return parsed.success ? parsed.data : null;
}

export function deviceView(r: Record<string, unknown>): DeviceView {
  const reasons = parseJson(r.reasons);
  // The check constraint keeps the column to core's statuses; anything else reads as blocked.
  const status = readinessStatusSchema.catch('blocked').parse(r.status);
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
    status,
    inUse: r.in_use === true,
    holder: holderOf(r.holder),
    firstReason: toStringOrNull(r.first_reason),
    // Stored by ingest from core's assessment, so already of this shape.
    reasons: Array.isArray(reasons) ? (reasons as ReadinessReason[]) : [],
    updatedAt: toIso(r.updated_at),
  };
}
