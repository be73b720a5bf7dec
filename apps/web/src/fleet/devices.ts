/**
 * devices.search: every device of the fleet by name, ids, address, class, driver, status, host or
 * host label, newest-first never — ordered by hostname then address, keyset-paginated.
 */
import type { Database, DeviceStatus } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { decodeCursor, page } from './cursor';
import { DEVICE_COLUMNS, type DeviceView, deviceView } from './device-view';
import { hostHasLabels, type LabelFilter } from './filters';
import { allOf, containsPattern, rowsOf } from './sql-rows';

export interface DeviceSearchInput {
  /** Matches vendor, device and class names, `vendor:device` ids and the address (substring). */
  q?: string;
  vendorId?: string;
  deviceId?: string;
  /** Class code prefix: `02` network, `0300` VGA, `010802` NVMe. */
  classPrefix?: string;
  driver?: string;
  status?: DeviceStatus;
  /** The first (most severe) readiness reason's code, e.g. `host-critical`. */
  reason?: string;
  labels?: LabelFilter;
  hostId?: string;
  /** Only hosts whose hostname contains this (case-insensitive). */
  hostSearch?: string;
  limit: number;
  cursor?: string | null;
}

export interface DeviceSearchRow extends DeviceView {
  hostname: string;
  hostState: string;
}

export async function searchDevices(
  db: Database,
  input: DeviceSearchInput,
): Promise<{ items: DeviceSearchRow[]; nextCursor: string | null }> {
  const after = decodeCursor(input.cursor, 3);
  const q = input.q?.trim();
  const pattern = q === undefined || q === '' ? undefined : containsPattern(q);
  const hostSearch = input.hostSearch?.trim() || undefined;
  const where = allOf([
    pattern === undefined
      ? undefined
      : sql`(d.vendor_name ILIKE ${pattern} OR d.device_name ILIKE ${pattern}
            OR d.class_name ILIKE ${pattern} OR d.address ILIKE ${pattern}
            OR (d.vendor_id || ':' || d.device_id) ILIKE ${pattern})`,
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
      SELECT ${DEVICE_COLUMNS}, h.hostname, h.state AS host_state
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
