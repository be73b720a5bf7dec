/**
 * Writing a host's devices: bulk statements, only what changed.
 *
 * An agent resends its whole inventory on every snapshot; a fleet of thousands of hosts doing so
 * must not rewrite thousands of unchanged rows (WAL, vacuum, index churn) nor run a statement per
 * device. Each row's `facts` column holds the full core Device, so "changed" is one jsonb
 * comparison in the upsert's WHERE, and every other column is derived from it.
 *
 * The upserts send a whole list as ONE jsonb parameter and let PostgreSQL derive the columns
 * (`jsonb_array_elements`): measured against a multi-row INSERT ... VALUES of the same rows it is
 * about 3-4x faster on PostgreSQL and 3x on PGlite (bench/scenarios/ingest-write-paths.ts), and
 * faster than an UNNEST of one array per column, whose jsonb columns must travel as escaped array
 * literals. deviceRow() and the parameter-limit constants remain: they describe the VALUES shape
 * the bench compares against, and the SQL below must produce exactly deviceRow()'s columns.
 */
import type { Device, DeviceLinks, IommuGroup } from '@vfio-fleet/core';
import { and, eq, getTableColumns, type SQL, sql } from 'drizzle-orm';
import type { Database } from './client';
import { devices, hostLabels, iommuGroups, type NewDeviceRow } from './schema';

/**
 * PostgreSQL's wire protocol counts a statement's bind parameters in an Int16 (Bind message), so
 * one statement takes at most 65,535 of them; a multi-row VALUES insert must be split. postgres.js is
 * stricter still (it throws MAX_PARAMETERS_EXCEEDED at 65,534), so stay under both.
 */
export const MAX_BIND_PARAMETERS = 65_533;

/** The devices row for a core Device (readiness as core assessed it), as a VALUES insert writes it. */
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
    // DEVICE_ROWS_PER_STATEMENT is exact.
    updatedAt: new Date(),
  };
}

/** Bind parameters one device row takes in an INSERT. */
export const DEVICE_ROW_PARAMETERS = Object.keys(getTableColumns(devices)).length;

/** Rows per multi-row VALUES INSERT so that one statement stays under MAX_BIND_PARAMETERS. */
export const DEVICE_ROWS_PER_STATEMENT = Math.floor(MAX_BIND_PARAMETERS / DEVICE_ROW_PARAMETERS);

export interface UpsertResult {
  /** Rows inserted or whose content changed (unchanged rows are not written at all). */
  written: number;
  /** The addresses of those rows. */
  writtenAddresses: string[];
  /** SQL statements issued: one for any number of devices (none for an empty list). */
  statements: number;
}

/**
 * Every column of a devices row as SQL over `d`, one core Device as jsonb: the same values
 * deviceRow() computes in JS, derived by PostgreSQL from the single document the upsert sends.
 */
const DEVICE_COLUMNS_FROM_JSONB = `
  d->>'address', d->>'vendorId', d->>'deviceId', d->>'subsystemVendorId', d->>'subsystemDeviceId',
  d->>'classCode', d->>'revision', d->>'driver', d->>'driverModule', d->>'driverOverride',
  (d->>'iommuGroup')::integer, (d->>'numaNode')::integer, d->>'kind', d->>'parent', d->>'physfn',
  (d->'sriov'->>'totalVfs')::integer, (d->'sriov'->>'numVfs')::integer,
  d->'names'->>'vendor', d->'names'->>'device', d->'names'->>'className',
  d->'vfio'->>'module', d->'vfio'->>'driver',
  d->'readiness'->>'status',
  ARRAY(SELECT r.reason->>'code'
        FROM jsonb_array_elements(d->'readiness'->'reasons') WITH ORDINALITY AS r(reason, n)
        ORDER BY r.n),
  d->'readiness'->'reasons'->0->>'code',
  d->'readiness'->'reasons',
  d,
  now()`;

/** The devices columns in the order DEVICE_COLUMNS_FROM_JSONB produces them. */
const DEVICE_COLUMN_NAMES = `host_id, address, vendor_id, device_id, subsystem_vendor_id,
  subsystem_device_id, class_code, revision, driver, driver_module, driver_override, iommu_group,
  numa_node, kind, parent, physfn, sriov_total_vfs, sriov_num_vfs, vendor_name, device_name,
  class_name, vfio_module, vfio_driver, status, reason_codes, first_reason, reasons, facts,
  updated_at`;

/** `SET col = excluded.col` for every column but the key, as SQL text. */
const EXCLUDED_SET = DEVICE_COLUMN_NAMES.split(',')
  .map((name) => name.trim())
  .filter((name) => name !== 'host_id' && name !== 'address')
  .map((name) => `${name} = excluded.${name}`)
  .join(', ');

/** The rows of a raw `execute()`: postgres.js returns an array, PGlite `{ rows }`. */
export function rowsOf<T>(result: unknown): T[] {
  if (Array.isArray(result)) return result as T[];
  return (result as { rows: T[] }).rows;
}

/**
 * Inserts new devices and updates changed ones in ONE statement whatever their number: the whole
 * list travels as a single jsonb parameter (`jsonb_array_elements($2::jsonb)`) and PostgreSQL
 * derives every column from it. Compared with a multi-row INSERT ... VALUES (29 bind parameters a
 * row, chunked under the 65,535 limit), the client serializes one JSON string instead of building
 * and encoding thousands of parameters, and the server plans one small statement.
 *
 * An unchanged device (same core Device content: jsonb equality ignores key order) is not
 * written: its updated_at stays, no row version is created. Run it in the ingest transaction
 * (`tx`) so a snapshot lands whole or not at all.
 */
export async function bulkUpsertDevices(
  tx: Database,
  hostId: string,
  items: readonly Device[],
): Promise<UpsertResult> {
  const rows = deviceRowsFromJsonb(hostId, items);
  if (rows === null) return { written: 0, writtenAddresses: [], statements: 0 };
  const result = await tx.execute(sql`
    INSERT INTO devices (${DEVICES_INSERT_COLUMNS}) ${rows}
    ON CONFLICT (host_id, address) DO UPDATE SET ${sql.raw(EXCLUDED_SET)}
    WHERE devices.facts IS DISTINCT FROM excluded.facts
    RETURNING address`);
  const writtenAddresses = rowsOf<{ address: string }>(result).map((row) => row.address);
  return { written: writtenAddresses.length, writtenAddresses, statements: 1 };
}

const serialized = new WeakMap<Device, string>();

/**
 * JSON.stringify of a Device, kept with the object: ingest hashes each device's JSON for the
 * inventory hash (apps/web gateway/ingest.ts) and then sends the same text to the database here;
 * serializing a 200-device host twice was about 0.8 ms of each snapshot's CPU. Only for Device
 * objects that are not changed afterwards (ingest derives a new object for every change).
 */
export function deviceJson(device: Device): string {
  let json = serialized.get(device);
  if (json === undefined) {
    json = JSON.stringify(device);
    serialized.set(device, json);
  }
  return json;
}

/** The devices columns, in the order deviceRowsFromJsonb produces them. */
export const DEVICES_INSERT_COLUMNS = sql.raw(DEVICE_COLUMN_NAMES);

/**
 * `SELECT <every devices column> FROM jsonb_array_elements(<the devices as one jsonb parameter>)`:
 * one row per address (a duplicate inside one INSERT ... ON CONFLICT is an error, "cannot affect
 * row a second time", and a plain INSERT's would be a unique violation; the last report of an
 * address wins). Null for no devices.
 */
export function deviceRowsFromJsonb(hostId: string, items: readonly Device[]): SQL | null {
  const byAddress = new Map<string, Device>();
  for (const device of items) byAddress.set(device.address, device);
  if (byAddress.size === 0) return null;
  const document = `[${Array.from(byAddress.values(), deviceJson).join(',')}]`;
  return sql`SELECT ${hostId}::uuid, ${sql.raw(DEVICE_COLUMNS_FROM_JSONB)}
    FROM jsonb_array_elements(${document}::jsonb) AS d`;
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

/** A stored host's device links and group listing: what core's deltaScope works from. */
export interface HostTopology {
  links: DeviceLinks[];
  listing: IommuGroup[];
}

/** The host's device links as one JSON array of [address, iommu_group, parent, kind]. */
function linksSql(hostId: string): SQL<unknown> {
  return sql`(SELECT coalesce(json_agg(json_build_array(address, iommu_group, parent, kind)), '[]')
    FROM devices WHERE host_id = ${hostId}::uuid)`;
}

/** The host's IOMMU groups as one JSON array of [group_id, devices], in group order. */
function listingSql(hostId: string): SQL<unknown> {
  return sql`(SELECT coalesce(json_agg(json_build_array(group_id, devices) ORDER BY group_id), '[]')
    FROM iommu_groups WHERE host_id = ${hostId}::uuid)`;
}

/**
 * The links (address, IOMMU group, parent, kind) of every device of a host, and its group listing,
 * in one statement that returns one row: each list aggregated into a JSON document, which the
 * client parses whole, instead of hundreds of rows decoded column by column.
 */
export async function loadHostTopology(tx: Database, hostId: string): Promise<HostTopology> {
  const result = await tx.execute(
    sql`SELECT ${linksSql(hostId)} AS links, ${listingSql(hostId)} AS listing`,
  );
  const [row] = rowsOf<{ links: unknown; listing: unknown }>(result);
  return { links: linksOf(row?.links), listing: listingOf(row?.listing) };
}

/**
 * Columns to add to the `SELECT ... FROM hosts WHERE id = hostId FOR UPDATE` that locks a host
 * row, so that the same statement reads the host's topology (what loadHostTopology reads), saving
 * a delta a round trip. Pass the row to topologyIfCurrent: under READ COMMITTED a statement that
 * waited for the lock returns the newest row version but reads everything else, the topology
 * included, with the snapshot it started with, so a store of the same host that committed while it
 * waited would be missed. Every write of a host's inventory updates its host row, so that case is
 * exactly the one where the locked row's version (xmin) is not the version the statement's
 * snapshot sees; topologyIfCurrent then gives null, and the caller reads it again
 * (loadHostTopology, now after the lock).
 */
export function lockedTopologyColumns(hostId: string) {
  return {
    topologyLinks: linksSql(hostId),
    topologyListing: listingSql(hostId),
    lockedVersion: sql<string>`hosts.xmin::text`,
    snapshotVersion: sql<
      string | null
    >`(SELECT h.xmin::text FROM hosts h WHERE h.id = ${hostId}::uuid)`,
  };
}

/** The topology read with the lock (lockedTopologyColumns), or null when it may be stale. */
export function topologyIfCurrent(row: {
  topologyLinks: unknown;
  topologyListing: unknown;
  lockedVersion: string;
  snapshotVersion: string | null;
}): HostTopology | null {
  if (row.snapshotVersion !== row.lockedVersion) return null;
  return { links: linksOf(row.topologyLinks), listing: listingOf(row.topologyListing) };
}

/** Parsed from our own json_agg, so a mismatch is a bug here: it throws rather than guess. */
function linksOf(value: unknown): DeviceLinks[] {
  if (!Array.isArray(value)) throw new Error('device links: not a JSON array');
  return value.map((entry: unknown): DeviceLinks => {
    if (!Array.isArray(entry)) throw new Error('device links: an entry is not an array');
    const [address, iommuGroup, parent, kind] = entry as unknown[];
    if (
      typeof address !== 'string' ||
      (iommuGroup !== null && typeof iommuGroup !== 'number') ||
      (parent !== null && typeof parent !== 'string') ||
      (kind !== 'bridge' && kind !== 'endpoint')
    ) {
      throw new Error(`device links: unexpected entry ${JSON.stringify(entry)}`);
    }
    return { address, iommuGroup, parent, kind };
  });
}

function listingOf(value: unknown): IommuGroup[] {
  if (!Array.isArray(value)) throw new Error('group listing: not a JSON array');
  return value.map((entry: unknown): IommuGroup => {
    const [id, members] = Array.isArray(entry) ? (entry as unknown[]) : [];
    if (
      typeof id !== 'number' ||
      !Array.isArray(members) ||
      members.some((m) => typeof m !== 'string')
    ) {
      throw new Error(`group listing: unexpected entry ${JSON.stringify(entry)}`);
    }
    return { id, devices: members as string[] };
  });
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

/** One group per id, the last report of an id winning (as for the devices). */
export function groupsById(groups: readonly IommuGroup[]): Map<number, IommuGroup> {
  const byId = new Map<number, IommuGroup>();
  for (const group of groups) byId.set(group.id, group);
  return byId;
}

/**
 * `SELECT host_id, group_id, devices FROM jsonb_array_elements(<the groups as one jsonb
 * parameter>)`: like the devices, the whole list in one parameter, one statement, any size.
 * Null for no groups.
 */
export function groupRowsFromJsonb(
  hostId: string,
  byId: ReadonlyMap<number, IommuGroup>,
): SQL | null {
  if (byId.size === 0) return null;
  const document = JSON.stringify(
    [...byId.values()].map((group) => ({ id: group.id, devices: group.devices })),
  );
  return sql`SELECT ${hostId}::uuid, (g->>'id')::integer,
      ARRAY(SELECT m.address
            FROM jsonb_array_elements_text(g->'devices') WITH ORDINALITY AS m(address, n)
            ORDER BY m.n)
    FROM jsonb_array_elements(${document}::jsonb) AS g`;
}

/**
 * Makes the host's IOMMU groups exactly `groups`: inserts new ones, rewrites a group only when its
 * member list changed, deletes the ones no longer reported. One statement each, like the devices.
 */
export async function syncIommuGroups(
  tx: Database,
  hostId: string,
  groups: readonly IommuGroup[],
): Promise<SyncResult> {
  const byId = groupsById(groups);
  let written = 0;
  const rows = groupRowsFromJsonb(hostId, byId);
  if (rows !== null) {
    const result = await tx.execute(sql`
      INSERT INTO iommu_groups (host_id, group_id, devices) ${rows}
      ON CONFLICT (host_id, group_id) DO UPDATE SET devices = excluded.devices
      WHERE iommu_groups.devices IS DISTINCT FROM excluded.devices
      RETURNING group_id`);
    written = rowsOf(result).length;
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
