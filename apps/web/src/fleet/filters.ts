/**
 * Filters shared by the fleet queries: hosts by label. (Devices bound to a vfio driver:
 * boundToVfioSql in @vfio-fleet/db, which the capacity rollups count at ingest.)
 */
import { type SQL, sql } from 'drizzle-orm';

export type LabelFilter = Record<string, string>;

/**
 * Hosts carrying every given label: one EXISTS per label, each an index lookup on
 * host_labels (host_id, key) — the primary key.
 */
export function hostHasLabels(hostId: SQL, labels: LabelFilter | undefined): SQL | undefined {
  const entries = Object.entries(labels ?? {});
  if (entries.length === 0) return undefined;
  return sql.join(
    entries.map(
      ([key, value]) =>
        sql`EXISTS (SELECT 1 FROM host_labels l WHERE l.host_id = ${hostId} AND l.key = ${key} AND l.value = ${value})`,
    ),
    sql` AND `,
  );
}
