/**
 * devices.search: every device of the fleet by name, ids, address, class, driver, status, holder
 * (VM name or command of an in-use device), host or host label, newest-first never — ordered by hostname then address, keyset-paginated, each row
 * with its first (most severe) reason only.
 *
 * At 1M device rows the single join PostgreSQL plans for this is at the mercy of its estimates:
 * with a LIMIT it walks hosts in hostname order but joins them to a materialized scan of every
 * matching device (seconds for a text search), or it sorts all matches. So a page is read in two
 * steps. First hosts in page order, a batch at a time (the hosts table is small and indexed by
 * hostname), and the batch's devices by primary key (host_id, address): a page of common
 * devices costs a few hosts' rows. Batches grow while the page is not full; but when a filter
 * has its own index (vendor:device, status, driver, reason) and the first batch did not fill the
 * page, the matches are rare, and the rest of the page comes from one statement over the rest of
 * the fleet, where the planner's index scan and top-N sort is the fast way.
 */
import { type Database, type DeviceStatus, textArrayLiteral } from '@vfio-fleet/db';
import { type SQL, sql } from 'drizzle-orm';
import { decodeCursor, page } from './cursor';
import { DEVICE_COLUMNS_FIRST_REASON, type DeviceView, deviceView } from './device-view';
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
  /** Only the first (most severe) reason: every reason is on the host page (hostView.get). */
  reasons: DeviceView['reasons'];
  hostname: string;
  hostState: string;
}

/**
 * The holder's VM name or command matches ("which host holds VM X's devices"). Only in-use rows
 * are looked at: the status test comes first, so the facts jsonb is read for held devices alone.
 */
function holderMatches(pattern: string): SQL {
  return sql`(d.status = 'in-use' AND (d.facts->'holder'->>'vm' ILIKE ${pattern}
              OR d.facts->'holder'->>'command' ILIKE ${pattern}))`;
}

const FIRST_BATCH_HOSTS = 8;
const MAX_BATCH_HOSTS = 800;

export async function searchDevices(
  db: Database,
  input: DeviceSearchInput,
): Promise<{ items: DeviceSearchRow[]; nextCursor: string | null }> {
  const after = decodeCursor(input.cursor, ['text', 'uuid', 'text']);
  const q = input.q?.trim();
  const pattern = q === undefined || q === '' ? undefined : containsPattern(q);
  const hostSearch = input.hostSearch?.trim() || undefined;
  const deviceWhere = [
    pattern === undefined
      ? undefined
      : sql`(${
          pattern.includes('\n')
            ? sql`(d.vendor_name ILIKE ${pattern} OR d.device_name ILIKE ${pattern}
              OR d.class_name ILIKE ${pattern} OR d.address ILIKE ${pattern}
              OR (d.vendor_id || ':' || d.device_id) ILIKE ${pattern})`
            : // The same match as ILIKE on each field (ILIKE lower-cases both sides), in one LIKE
              // over the fields joined by a newline, which a pattern without one cannot span: half
              // the cost per row, and a text search reads many rows.
              sql`lower(concat_ws(E'\\n', d.vendor_name, d.device_name, d.class_name, d.address,
              d.vendor_id || ':' || d.device_id)) LIKE lower(${pattern})`
        } OR ${holderMatches(pattern)})`,
    input.vendorId === undefined ? undefined : sql`d.vendor_id = ${input.vendorId}`,
    input.deviceId === undefined ? undefined : sql`d.device_id = ${input.deviceId}`,
    input.classPrefix === undefined ? undefined : sql`d.class_code LIKE ${`${input.classPrefix}%`}`,
    input.driver === undefined ? undefined : sql`d.driver = ${input.driver}`,
    input.status === undefined ? undefined : sql`d.status = ${input.status}`,
    input.reason === undefined ? undefined : sql`d.first_reason = ${input.reason}`,
  ];
  const hostWhere = [
    input.hostId === undefined ? undefined : sql`h.id = ${input.hostId}::uuid`,
    hostSearch === undefined ? undefined : sql`h.hostname ILIKE ${containsPattern(hostSearch)}`,
    hostHasLabels(sql`h.id`, input.labels),
  ];
  const indexedFilter =
    input.vendorId !== undefined ||
    input.status !== undefined ||
    input.driver !== undefined ||
    input.reason !== undefined;
  const want = input.limit + 1;
  const rows: Record<string, unknown>[] = [];
  // Where the next host batch starts: after the cursor's host (inclusive: the rest of its
  // devices), then strictly after the last host read.
  let from: { hostname: string; hostId: string; inclusive: boolean } | null =
    after === null
      ? null
      : { hostname: String(after[0]), hostId: String(after[1]), inclusive: true };
  const afterAddress = after === null ? null : String(after[2]);
  let batch = FIRST_BATCH_HOSTS;
  let scannedHosts = 0;
  for (;;) {
    const start = from;
    const hostRows = rowsOf<Record<string, unknown>>(
      await db.execute(sql`
        SELECT h.id, h.hostname FROM hosts h
        WHERE ${allOf([
          ...hostWhere,
          start === null
            ? undefined
            : // The redundant bound on hostname alone lets the hostname index start there.
              sql`h.hostname >= ${start.hostname} AND (h.hostname, h.id) ${start.inclusive ? sql`>=` : sql`>`} (${start.hostname}, ${start.hostId}::uuid)`,
        ])}
        ORDER BY h.hostname, h.id
        LIMIT ${batch}`),
    );
    const ids = hostRows.map((h) => String(h.id));
    if (ids.length > 0) {
      // Per host, in batch order, at most the rows still wanted, by primary key (host_id,
      // address): a host with many matches stops after a page's worth. OFFSET 0 keeps the
      // filters out of the host's scan: pushed into it, the planner ANDs in the filter's own
      // index (all 40,000 rows of a GPU type, per host) to find a host's 8.
      const found = rowsOf<Record<string, unknown>>(
        await db.execute(sql`
          SELECT d.*, h.hostname, h.state AS host_state
          FROM unnest(${textArrayLiteral(ids)}::uuid[]) WITH ORDINALITY AS b(id, ord)
          JOIN hosts h ON h.id = b.id
          CROSS JOIN LATERAL (
            SELECT ${DEVICE_COLUMNS_FIRST_REASON}
            FROM (SELECT * FROM devices d WHERE d.host_id = b.id ORDER BY d.address OFFSET 0) d
            WHERE ${allOf([
              ...deviceWhere,
              after === null
                ? undefined
                : sql`(h.hostname, d.host_id, d.address) > (${String(after[0])}, ${String(after[1])}::uuid, ${afterAddress})`,
            ])}
            ORDER BY d.address
            LIMIT ${want - rows.length}) d
          ORDER BY b.ord, d.address
          LIMIT ${want - rows.length}`),
      );
      rows.push(...found);
      scannedHosts += ids.length;
    }
    const last = hostRows[hostRows.length - 1];
    if (rows.length >= want || hostRows.length < batch || last === undefined) break;
    from = { hostname: String(last.hostname), hostId: String(last.id), inclusive: false };
    if (indexedFilter) {
      // Rare matches: let the planner find the rest through the filter's index.
      const rest = rowsOf<Record<string, unknown>>(
        await db.execute(sql`
          SELECT ${DEVICE_COLUMNS_FIRST_REASON}, h.hostname, h.state AS host_state
          FROM devices d JOIN hosts h ON h.id = d.host_id
          WHERE ${allOf([
            ...deviceWhere,
            ...hostWhere,
            sql`h.hostname >= ${from.hostname} AND (h.hostname, h.id) > (${from.hostname}, ${from.hostId}::uuid)`,
          ])}
          ORDER BY h.hostname, d.host_id, d.address
          LIMIT ${want - rows.length}`),
      );
      rows.push(...rest);
      break;
    }
    // Size the next batch from the matches per host seen so far, with a margin; with none seen
    // yet, four times the last one, so a filter matching nothing ends in a few statements.
    const perHost = rows.length / Math.max(1, scannedHosts);
    batch = Math.min(
      perHost > 0 ? Math.max(4, Math.ceil(((want - rows.length) / perHost) * 1.5)) : batch * 4,
      MAX_BATCH_HOSTS,
    );
  }
  return page(
    rows.map((r) => ({
      ...deviceView(r),
      hostname: String(r.hostname),
      hostState: String(r.host_state),
    })),
    input.limit,
    (row) => [row.hostname, row.hostId, row.address],
  );
}
