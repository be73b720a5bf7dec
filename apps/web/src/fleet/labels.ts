/**
 * fleet.labelKeys: the host label keys in use (rack, cluster, role...), with how many hosts carry
 * each and how many distinct values it has — what a "split by label" picker offers. One aggregate
 * over host_labels, limited: keys are few in practice, but agents choose them, so never unbounded.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { rowsOf, toInt } from './sql-rows';

export interface LabelKey {
  key: string;
  hosts: number;
  values: number;
}

export const LABEL_KEYS_LIMIT = 200;

export async function fleetLabelKeys(db: Database): Promise<LabelKey[]> {
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT l.key, count(*)::int AS hosts, count(DISTINCT l.value)::int AS value_count
      FROM host_labels l
      GROUP BY l.key
      ORDER BY l.key
      LIMIT ${LABEL_KEYS_LIMIT}`),
  );
  return rows.map((r) => ({
    key: String(r.key),
    hosts: toInt(r.hosts),
    values: toInt(r.value_count),
  }));
}
