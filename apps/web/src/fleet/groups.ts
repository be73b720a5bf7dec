/** groups.get: one IOMMU group of one host, its devices with their readiness, and its active job. */
import { ACTIVE_JOB_STATES, type Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { ServerError } from '../errors';
import { DEVICE_COLUMNS, type DeviceView, deviceView } from './device-view';
import { rowsOf, toIso } from './sql-rows';

export interface ActiveJob {
  id: string;
  state: string;
  target: string;
  address: string;
  createdAt: string | null;
  deadline: string | null;
}

const activeStates = sql.join(
  ACTIVE_JOB_STATES.map((state) => sql`${state}`),
  sql`, `,
);

function activeJobView(r: Record<string, unknown>): ActiveJob {
  return {
    id: String(r.id),
    state: String(r.state),
    target: String(r.target),
    address: String(r.address),
    createdAt: toIso(r.created_at),
    deadline: toIso(r.deadline),
  };
}

/** The active job of each group of a host (the database allows at most one per group). */
export async function activeJobsOf(db: Database, hostId: string): Promise<Map<number, ActiveJob>> {
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT id, state, target, address, created_at, deadline, iommu_group FROM jobs
      WHERE host_id = ${hostId}::uuid AND state IN (${activeStates})`),
  );
  return new Map(rows.map((r) => [Number(r.iommu_group), activeJobView(r)]));
}

export interface GroupDetail {
  hostId: string;
  hostname: string;
  hostState: string;
  group: number;
  devices: DeviceView[];
  activeJob: ActiveJob | null;
}

export async function getGroup(
  db: Database,
  input: { hostId: string; group: number },
): Promise<GroupDetail> {
  const [host] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`SELECT hostname, state FROM hosts WHERE id = ${input.hostId}::uuid`),
  );
  if (host === undefined) throw new ServerError('not-found', `no host ${input.hostId}`);
  const devices = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT ${DEVICE_COLUMNS} FROM devices d
      WHERE d.host_id = ${input.hostId}::uuid AND d.iommu_group = ${input.group}
      ORDER BY d.address`),
  );
  if (devices.length === 0) {
    throw new ServerError('not-found', `no IOMMU group ${input.group} on ${String(host.hostname)}`);
  }
  const [job] = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT id, state, target, address, created_at, deadline FROM jobs
      WHERE host_id = ${input.hostId}::uuid AND iommu_group = ${input.group}
        AND state IN (${activeStates})
      LIMIT 1`),
  );
  return {
    hostId: input.hostId,
    hostname: String(host.hostname),
    hostState: String(host.state),
    group: input.group,
    devices: devices.map(deviceView),
    activeJob: job === undefined ? null : activeJobView(job),
  };
}
