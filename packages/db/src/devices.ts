/**
 * Writing a host's devices: bulk statements, only what changed.
 *
 * An agent resends its whole inventory on every snapshot; a fleet of thousands of hosts doing so
 * must not rewrite thousands of unchanged rows (WAL, vacuum, index churn) nor run a statement per
 * device. Each row's `facts` column holds the full core Device, so "changed" is one jsonb
 * comparison in the upsert's WHERE, and every other column is derived from it.
 */
import type { Device, IommuGroup } from '@vfio-fleet/core';
import { and, eq, getTableColumns, sql } from 'drizzle-orm';
import type { Database } from './client';
import { devices, hostLabels, iommuGroups, type NewDeviceRow } from './schema';

/**
 * PostgreSQL's wire protocol counts a statement's bind parameters in an Int16 (Bind message), so
 * one statement takes at most 65,535 of them; larger inserts must be split. postgres.js is
 * stricter still (it throws MAX_PARAMETERS_EXCEEDED at 65,534), so stay under both.
 */
export const MAX_BIND_PARAMETERS = 65_533;

/** The devices row for a core Device (readiness as core assessed it). */
export function deviceRow(hostId: string, device: Device): NewDeviceRow & { updatedAt: Date } {
  return {
    hostId,
    address: device.address,
    vendorId: device.vendorId,
    deviceId: device.deviceId,
    subsystemVendorId: device.subsystemVendorId,
    subsystemDeviceId: device.subsystemDeviceId,
    classCode: device.classCode,
    revision: device.revision,
    driver: device.driver,
    driverModule: device.driverModule,
    driverOverride: device.driverOverride,
    iommuGroup: device.iommuGroup,
    numaNode: device.numaNode,
    kind: device.kind,
    parent: device.parent,
    physfn: device.physfn,
    sriovTotalVfs: device.sriov?.totalVfs ?? null,
    sriovNumVfs: device.sriov?.numVfs ?? null,
    vendorName: device.names.vendor,
    deviceName: device.names.device,
    className: device.names.className,
    vfioModule: device.vfio?.module ?? null,
    vfioDriver: device.vfio?.driver ?? null,
    status: device.readiness.status,
    reasonCodes: device.readiness.reasons.map((reason) => reason.code),
    firstReason: device.readiness.reasons[0]?.code ?? null,
    reasons: device.readiness.reasons,
    facts: device,
    // Explicit rather than the column default, so every row has the same parameter count and
    // the chunk size below is exact.
    updatedAt: new Date(),
  };
}

/** Bind parameters one device row takes in an INSERT. */
export const DEVICE_ROW_PARAMETERS = Object.keys(getTableColumns(devices)).length;

/** Rows per INSERT so that one statement stays under MAX_BIND_PARAMETERS. */
export const DEVICE_ROWS_PER_STATEMENT = Math.floor(MAX_BIND_PARAMETERS / DEVICE_ROW_PARAMETERS);

export interface UpsertResult {
  /** Rows inserted or whose content changed (unchanged rows are not written at all). */
  written: number;
  /** The addresses of those rows. */
  writtenAddresses: string[];
  /** INSERT statements issued. */
  statements: number;
}

/**
 * Inserts new devices and updates changed ones, in chunked bulk statements. An unchanged device
 * (same core Device content) is not written: its updated_at stays, no row version is created.
 * Run it in the ingest transaction (`tx`) so a snapshot lands whole or not at all.
 */
export async function bulkUpsertDevices(
  tx: Database,
  hostId: string,
  items: readonly Device[],
  options: { rowsPerStatement?: number } = {},
): Promise<UpsertResult> {
  const rowsPerStatement = Math.min(
    options.rowsPerStatement ?? DEVICE_ROWS_PER_STATEMENT,
    DEVICE_ROWS_PER_STATEMENT,
  );
  // One row per address: a duplicate inside one INSERT ... ON CONFLICT is an error
  // ("cannot affect row a second time"); the last report of an address wins.
  const byAddress = new Map<string, Device>();
  for (const device of items) byAddress.set(device.address, device);
  const rows = [...byAddress.values()].map((device) => deviceRow(hostId, device));

  const writtenAddresses: string[] = [];
  let statements = 0;
  for (const chunk of chunks(rows, rowsPerStatement)) {
    const written = await tx
      .insert(devices)
      .values(chunk)
      .onConflictDoUpdate({
        target: [devices.hostId, devices.address],
        set: excludedColumns(),
        // jsonb equality ignores key order and whitespace: a resend of the same Device matches.
        setWhere: sql`${devices.facts} IS DISTINCT FROM excluded.facts`,
      })
      .returning({ address: devices.address });
    statements += 1;
    for (const row of written) writtenAddresses.push(row.address);
  }
  return { written: writtenAddresses.length, writtenAddresses, statements };
}

/** `SET col = excluded.col` for every column but the key. */
function excludedColumns() {
  const set: Record<string, ReturnType<typeof sql>> = {};
  for (const [key, column] of Object.entries(getTableColumns(devices))) {
    if (key === 'hostId' || key === 'address') continue;
    set[key] = sql.raw(`excluded."${column.name}"`);
  }
  return set;
}

/**
 * Deletes the host's devices whose address is not in `addresses` (removed or hot-unplugged), and
 * returns how many. The list travels as one text[] parameter, so any number of addresses fits.
 */
export async function deleteDevicesNotIn(
  tx: Database,
  hostId: string,
  addresses: readonly string[],
): Promise<number> {
  const deleted = await tx
    .delete(devices)
    .where(
      and(
        eq(devices.hostId, hostId),
        sql`${devices.address} <> ALL(${textArrayLiteral(addresses)}::text[])`,
      ),
    )
    .returning({ address: devices.address });
  return deleted.length;
}

/**
 * A PostgreSQL array literal (`{"a","b"}`) for one text[] parameter. drizzle's sql template expands
 * a JS array into one parameter per element, which would bring back the parameter limit.
 */
export function textArrayLiteral(values: readonly string[]): string {
  const quoted = values.map(
    (value) => `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`,
  );
  return `{${quoted.join(',')}}`;
}

/** Splits rows into runs of at most `size` (at least one row per run). */
export function* chunks<T>(rows: readonly T[], size: number): Generator<T[]> {
  const step = Math.max(1, Math.floor(size));
  for (let start = 0; start < rows.length; start += step) yield rows.slice(start, start + step);
}

export interface SyncResult {
  /** Rows inserted or changed. */
  written: number;
  /** Rows deleted because the report no longer has them. */
  deleted: number;
}

/**
 * Makes the host's IOMMU groups exactly `groups`: inserts new ones, rewrites a group only when its
 * member list changed, deletes the ones no longer reported. Bulk and chunked like the devices.
 */
export async function syncIommuGroups(
  tx: Database,
  hostId: string,
  groups: readonly IommuGroup[],
): Promise<SyncResult> {
  const byId = new Map<number, IommuGroup>();
  for (const group of groups) byId.set(group.id, group);
  const rows = [...byId.values()].map((group) => ({
    hostId,
    groupId: group.id,
    devices: [...group.devices],
  }));
  let written = 0;
  for (const chunk of chunks(rows, MAX_BIND_PARAMETERS / 3)) {
    const result = await tx
      .insert(iommuGroups)
      .values(chunk)
      .onConflictDoUpdate({
        target: [iommuGroups.hostId, iommuGroups.groupId],
        set: { devices: sql.raw('excluded."devices"') },
        setWhere: sql`${iommuGroups.devices} IS DISTINCT FROM excluded.devices`,
      })
      .returning({ groupId: iommuGroups.groupId });
    written += result.length;
  }
  const keep = `{${[...byId.keys()].join(',')}}`;
  const deleted = await tx
    .delete(iommuGroups)
    .where(and(eq(iommuGroups.hostId, hostId), sql`${iommuGroups.groupId} <> ALL(${keep}::int[])`))
    .returning({ groupId: iommuGroups.groupId });
  return { written, deleted: deleted.length };
}

/**
 * Makes the host's labels exactly `labels` (key → value): a changed value is rewritten, an
 * unchanged one is not touched, a key no longer present is deleted.
 */
export async function syncHostLabels(
  tx: Database,
  hostId: string,
  labels: Readonly<Record<string, string>>,
): Promise<SyncResult> {
  const rows = Object.entries(labels).map(([key, value]) => ({ hostId, key, value }));
  let written = 0;
  for (const chunk of chunks(rows, MAX_BIND_PARAMETERS / 3)) {
    const result = await tx
      .insert(hostLabels)
      .values(chunk)
      .onConflictDoUpdate({
        target: [hostLabels.hostId, hostLabels.key],
        set: { value: sql.raw('excluded."value"') },
        setWhere: sql`${hostLabels.value} IS DISTINCT FROM excluded.value`,
      })
      .returning({ key: hostLabels.key });
    written += result.length;
  }
  const deleted = await tx
    .delete(hostLabels)
    .where(
      and(
        eq(hostLabels.hostId, hostId),
        sql`${hostLabels.key} <> ALL(${textArrayLiteral(Object.keys(labels))}::text[])`,
      ),
    )
    .returning({ key: hostLabels.key });
  return { written, deleted: deleted.length };
}
