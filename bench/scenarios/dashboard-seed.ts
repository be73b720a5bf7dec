// Fills a bench database with a fleet of N hosts x 200 devices for the dashboard benches.
//
// Ingesting 5,000 snapshots one by one takes minutes (that is what the cold-ingest scenario
// measures), so only the templates go through ingest: one host per variant of the synthetic fleet
// (host i leaves GPU i % 8 unbound, so 8 variants) is ingested with ingestSnapshot, the real path
// (re-assessment, bulk upsert, groups, labels, rollups). Every other host is a copy of its variant
// made by SQL (INSERT ... SELECT over generate_series), with its own id, agent id, hostname and
// machine id; then the rollups of the copies are built by rebuildAllRollups, the same statements
// ingest's syncHostRollups runs per host, so they hold exactly what ingest would have written.
import { randomUUID } from 'node:crypto';
import { type Database, hosts, rebuildAllRollups } from '@vfio-fleet/db';
import { ingestSnapshot } from '@vfio-fleet/web';
import { sql } from 'drizzle-orm';
import { hostName, type SyntheticFleet, syntheticFleet } from '../lib/synthetic-fleet';

/** Variants of the synthetic fleet: host i is variant i % VARIANTS (its idle GPU). */
const VARIANTS = 8;
/** Hosts copied per statement: bounded transactions, and progress on a slow machine. */
const HOSTS_PER_COPY = 250;

export const RACKS = 50;
export const CLUSTERS = ['a', 'b', 'c', 'd', 'e'] as const;
export const ROLES = ['gpu', 'nic', 'storage'] as const;

/** Host i's labels, as scripts/demo.mjs labels its hosts: rack, cluster and role. */
export function benchLabels(i: number): Record<string, string> {
  return {
    rack: `r${String((i % RACKS) + 1).padStart(2, '0')}`,
    cluster: CLUSTERS[i % CLUSTERS.length] ?? 'a',
    role: ROLES[i % ROLES.length] ?? 'gpu',
  };
}

export function benchAgentId(i: number): string {
  return `bench-agent-${String(i).padStart(5, '0')}`;
}

export interface SeededFleet {
  hosts: number;
  devices: number;
  /** Host i's id is hostIds[i]; its agent id is benchAgentId(i), its hostname hostName(i). */
  hostIds: string[];
  /** The epoch and seq every host's stored state has (a delta must be based on them). */
  epoch: string;
  seq: number;
  seconds: { templates: number; copies: number; rollups: number; analyze: number };
}

function rowsOf(result: unknown): Record<string, unknown>[] {
  if (Array.isArray(result)) return result as Record<string, unknown>[];
  const rows = (result as { rows?: unknown }).rows;
  return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : [];
}

/**
 * Seeds `hostCount` hosts (state: every tenth offline) of `fleet` (built if not given) into an
 * empty, migrated database. `onProgress` hears how many hosts exist so far.
 */
export async function seedDashboardFleet(
  db: Database,
  options: { hosts: number; fleet?: SyntheticFleet; onProgress?: (hosts: number) => void },
): Promise<SeededFleet> {
  const hostCount = options.hosts;
  const fleet = options.fleet ?? (await syntheticFleet());
  const epoch = randomUUID();
  const seq = 1;
  const t0 = performance.now();
  const templates = Math.min(VARIANTS, hostCount);
  for (let i = 0; i < templates; i++) {
    const [row] = await db
      .insert(hosts)
      .values({
        agentId: benchAgentId(i),
        hostname: hostName(i),
        state: i % 10 === 9 ? 'offline' : 'online',
        lastSeenAt: new Date(),
      })
      .returning({ id: hosts.id });
    if (row === undefined) throw new Error('inserting a template host returned no row');
    await ingestSnapshot(
      db,
      row.id,
      { type: 'snapshot', epoch, seq, snapshot: fleet.snapshot(i) },
      benchLabels(i),
    );
  }
  const t1 = performance.now();
  options.onProgress?.(templates);

  for (let from = templates; from < hostCount; from += HOSTS_PER_COPY) {
    const to = Math.min(hostCount, from + HOSTS_PER_COPY) - 1;
    await db.transaction(async (tx) => {
      // The copies' host rows: the template's facts with their own identity (the hostname inside
      // the host jsonb too, as ingest would store it), labels, devices and IOMMU groups.
      await tx.execute(sql`
        INSERT INTO hosts (agent_id, hostname, machine_id, kernel_release, cpu_vendor,
          iommu_enabled, interrupt_remapping, state, last_seen_at, connected_at, epoch, last_seq,
          host, problems, agent_version, inventory_hash)
        SELECT 'bench-agent-' || lpad(g::text, 5, '0'), 'bench-' || lpad(g::text, 5, '0'),
               lpad(to_hex(g + 1), 32, '0'), t.kernel_release, t.cpu_vendor,
               t.iommu_enabled, t.interrupt_remapping,
               CASE WHEN g % 10 = 9 THEN 'offline' ELSE 'online' END, now(), now(), t.epoch,
               t.last_seq,
               jsonb_set(t.host, '{hostname}', to_jsonb('bench-' || lpad(g::text, 5, '0'))),
               t.problems, t.agent_version, NULL
        FROM generate_series(${from}::int, ${to}::int) g
        JOIN hosts t ON t.agent_id = 'bench-agent-' || lpad((g % ${VARIANTS})::text, 5, '0')`);
      // The copy -> template mapping, for the child tables.
      const pairs = sql`
        SELECT c.id AS copy_id, t.id AS template_id
        FROM generate_series(${from}::int, ${to}::int) g
        JOIN hosts c ON c.agent_id = 'bench-agent-' || lpad(g::text, 5, '0')
        JOIN hosts t ON t.agent_id = 'bench-agent-' || lpad((g % ${VARIANTS})::text, 5, '0')`;
      await tx.execute(sql`
        INSERT INTO devices (host_id, address, vendor_id, device_id, subsystem_vendor_id,
          subsystem_device_id, class_code, revision, driver, driver_module, driver_override,
          iommu_group, numa_node, kind, parent, physfn, sriov_total_vfs, sriov_num_vfs,
          vendor_name, device_name, class_name, vfio_module, vfio_driver, status, reason_codes,
          first_reason, reasons, facts, updated_at)
        SELECT p.copy_id, d.address, d.vendor_id, d.device_id, d.subsystem_vendor_id,
          d.subsystem_device_id, d.class_code, d.revision, d.driver, d.driver_module,
          d.driver_override, d.iommu_group, d.numa_node, d.kind, d.parent, d.physfn,
          d.sriov_total_vfs, d.sriov_num_vfs, d.vendor_name, d.device_name, d.class_name,
          d.vfio_module, d.vfio_driver, d.status, d.reason_codes, d.first_reason, d.reasons,
          d.facts, d.updated_at
        FROM (${pairs}) p JOIN devices d ON d.host_id = p.template_id`);
      await tx.execute(sql`
        INSERT INTO iommu_groups (host_id, group_id, devices)
        SELECT p.copy_id, ig.group_id, ig.devices
        FROM (${pairs}) p JOIN iommu_groups ig ON ig.host_id = p.template_id`);
      await tx.execute(sql`
        INSERT INTO host_labels (host_id, key, value)
        SELECT c.id, l.key,
               CASE l.key
                 WHEN 'rack' THEN 'r' || lpad(((g % ${RACKS}) + 1)::text, 2, '0')
                 WHEN 'cluster' THEN (${sql.raw(`ARRAY[${CLUSTERS.map((c) => `'${c}'`).join(',')}]`)})[(g % ${CLUSTERS.length}) + 1]
                 ELSE (${sql.raw(`ARRAY[${ROLES.map((r) => `'${r}'`).join(',')}]`)})[(g % ${ROLES.length}) + 1]
               END
        FROM generate_series(${from}::int, ${to}::int) g
        JOIN hosts c ON c.agent_id = 'bench-agent-' || lpad(g::text, 5, '0')
        CROSS JOIN (VALUES ('rack'), ('cluster'), ('role')) l(key)`);
    });
    options.onProgress?.(to + 1);
  }
  const t2 = performance.now();
  await rebuildAllRollups(db);
  const t3 = performance.now();
  await db.execute(sql`ANALYZE`);
  const t4 = performance.now();

  const idRows = rowsOf(
    await db.execute(sql`SELECT id, agent_id FROM hosts WHERE agent_id LIKE 'bench-agent-%'`),
  );
  const hostIds: string[] = new Array(hostCount);
  for (const r of idRows) {
    const i = Number(String(r.agent_id).slice('bench-agent-'.length));
    hostIds[i] = String(r.id);
  }
  const [count] = rowsOf(await db.execute(sql`SELECT count(*)::int AS n FROM devices`));
  return {
    hosts: hostCount,
    devices: Number(count?.n ?? 0),
    hostIds,
    epoch,
    seq,
    seconds: {
      templates: (t1 - t0) / 1000,
      copies: (t2 - t1) / 1000,
      rollups: (t3 - t2) / 1000,
      analyze: (t4 - t3) / 1000,
    },
  };
}
