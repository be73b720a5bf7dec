/**
 * Previews: core's planRebind on the host as the server last stored it, the same pure function
 * the agent runs on the live host before it writes anything. The preview hash covers what the
 * operator acknowledges (host, device, target, the plan's steps and preconditions), so a create
 * against a host whose state changed since the preview is refused instead of running a plan
 * nobody saw.
 */
import {
  type BlastRadiusEntry,
  type HostSnapshot,
  normalizePciAddress,
  type PlanRefusal,
  planRebind,
  type RebindPlan,
  type RebindTarget,
  warningsNeedingForce,
} from '@vfio-fleet/core';
import { ACTIVE_JOB_STATES, type Database, type HostState, hosts, jobs } from '@vfio-fleet/db';
import { and, eq, inArray } from 'drizzle-orm';
import { z } from 'zod';
import { ServerError } from '../errors';
import { loadSnapshot } from '../gateway/stored-state';
import { canonicalHash } from './canonical-hash';

export interface JobPreview {
  hostId: string;
  hostname: string;
  /** An offline host's job waits in the queue until the agent is back or its deadline passes. */
  hostOnline: boolean;
  /**
   * What the agent said at its last hello: true runs jobs; false (no `--allow-rebind`) and null
   * (an agent that does not say) are read-only, and no job is queued (job-rules' readOnlyProblem).
   */
  hostAllowsRebind: boolean | null;
  /** Canonical form of the address asked for. */
  address: string;
  target: RebindTarget;
  iommuGroup: number | null;
  ok: boolean;
  plan: RebindPlan | null;
  refusal: PlanRefusal | null;
  warnings: RebindPlan['warnings'];
  blastRadius: BlastRadiusEntry[];
  /**
   * Warning codes the agent only goes past with `force` (moving to vfio): a create without force
   * is refused here rather than by the agent minutes later.
   */
  needsForce: string[];
  /** The group's active job: creating another one would be refused. */
  activeJobId: string | null;
  previewHash: string;
}

export interface HostForPlanning {
  id: string;
  hostname: string;
  state: HostState;
  allowRebind: boolean | null;
  snapshot: HostSnapshot;
}

const uuidSchema = z.uuid();

export function requireUuid(value: string, what: string): void {
  if (!uuidSchema.safeParse(value).success) {
    throw new ServerError(
      'bad-request',
      `${what} is not a uuid: ${JSON.stringify(value.slice(0, 64))}`,
    );
  }
}

export function requireTarget(value: string): RebindTarget {
  if (value !== 'vfio' && value !== 'host') {
    throw new ServerError('bad-request', `target must be 'vfio' or 'host'`);
  }
  return value;
}

export function canonicalAddress(address: string): string {
  try {
    return normalizePciAddress(address);
  } catch {
    throw new ServerError(
      'bad-request',
      `${JSON.stringify(address.slice(0, 64))} is not a PCI address`,
    );
  }
}

/** The host's stored state as a core snapshot; not-found when unknown or never inventoried. */
export async function loadHostForPlanning(db: Database, hostId: string): Promise<HostForPlanning> {
  requireUuid(hostId, 'hostId');
  const [row] = await db
    .select({
      id: hosts.id,
      hostname: hosts.hostname,
      state: hosts.state,
      allowRebind: hosts.allowRebind,
      host: hosts.host,
      problems: hosts.problems,
    })
    .from(hosts)
    .where(eq(hosts.id, hostId));
  if (row === undefined) throw new ServerError('not-found', `no host ${hostId}`);
  if (row.host === null) {
    throw new ServerError('not-found', `host ${row.hostname} has not reported its inventory yet`);
  }
  const loaded = await loadSnapshot(db, row.id, row.host, row.problems);
  if (loaded === null) {
    throw new ServerError(
      'conflict',
      `the stored inventory of ${row.hostname} is damaged; nothing is planned on it until its agent's next snapshot replaces it`,
    );
  }
  return {
    id: row.id,
    hostname: row.hostname,
    state: row.state,
    allowRebind: row.allowRebind,
    snapshot: loaded.snapshot,
  };
}

/** The active job holding each of these groups, keyed `hostId/group`. */
export async function activeJobsOf(
  db: Database,
  hostIds: readonly string[],
): Promise<Map<string, string>> {
  const active = new Map<string, string>();
  // A few thousand uuids per statement: far below the bind-parameter cap.
  for (let i = 0; i < hostIds.length; i += 5000) {
    const rows = await db
      .select({ id: jobs.id, hostId: jobs.hostId, iommuGroup: jobs.iommuGroup })
      .from(jobs)
      .where(
        and(
          inArray(jobs.hostId, hostIds.slice(i, i + 5000)),
          inArray(jobs.state, [...ACTIVE_JOB_STATES]),
        ),
      );
    for (const row of rows) active.set(groupKey(row.hostId, row.iommuGroup), row.id);
  }
  return active;
}

export function groupKey(hostId: string, iommuGroup: number): string {
  return `${hostId}/${iommuGroup}`;
}

/** The preview of one device on a loaded host (address canonical, known to the snapshot or not). */
export function buildPreview(
  host: HostForPlanning,
  address: string,
  target: RebindTarget,
  active: ReadonlyMap<string, string>,
): JobPreview {
  const result = planRebind(host.snapshot, address, target);
  const device = host.snapshot.devices.find((d) => d.address === address);
  const iommuGroup = result.ok ? result.plan.iommuGroup : (device?.iommuGroup ?? null);
  const base = {
    hostId: host.id,
    hostname: host.hostname,
    hostOnline: host.state === 'online',
    hostAllowsRebind: host.allowRebind,
    address,
    target,
    iommuGroup,
    activeJobId: iommuGroup === null ? null : (active.get(groupKey(host.id, iommuGroup)) ?? null),
  };
  if (!result.ok) {
    return {
      ...base,
      ok: false,
      plan: null,
      refusal: result.refusal,
      warnings: [],
      blastRadius: [],
      needsForce: [],
      previewHash: canonicalHash({
        hostId: host.id,
        target,
        address,
        refusal: { code: result.refusal.code, message: result.refusal.message },
      }),
    };
  }
  const { plan } = result;
  return {
    ...base,
    ok: true,
    plan,
    refusal: null,
    warnings: plan.warnings,
    blastRadius: plan.blastRadius,
    // The agent applies the same core rule before it writes.
    needsForce: [...new Set(warningsNeedingForce(plan).map((r) => r.code))],
    previewHash: canonicalHash({
      hostId: host.id,
      target,
      address,
      steps: plan.steps,
      preconditions: plan.preconditions,
    }),
  };
}
