/** Filters shared by the fleet queries: hosts by label, devices bound to a vfio driver. */
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

/**
 * A device whose bound driver is a vfio one: `vfio-pci` and the variant drivers
 * (`mlx5_vfio_pci`, `nvgrace_gpu_vfio_pci`...), or whatever vfio driver core selected for it.
 * In LIKE `_` matches any one character, so '%vfio_pci' covers both `vfio_pci` and `vfio-pci`.
 */
export function boundToVfio(d: SQL): SQL {
  return sql`(${d}.driver LIKE 'vfio%' OR ${d}.driver LIKE '%vfio_pci' OR (${d}.vfio_driver IS NOT NULL AND ${d}.driver = ${d}.vfio_driver))`;
}
