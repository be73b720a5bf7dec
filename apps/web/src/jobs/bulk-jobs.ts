/**
 * Bulk jobs: "all ready devices of type X on hosts with label Y" as one job per IOMMU group, all
 * created in one transaction, optionally behind a canary: the first job (first host by hostname)
 * runs alone; every other job carries canary_of = its id, the dispatcher holds them until it
 * succeeded, and afterJobTerminal cancels them ('canary-failed') when it did not.
 */
import { randomUUID } from 'node:crypto';
import { isVfioDriverName } from '@vfio-fleet/core';
import {
  chunks,
  type Database,
  devices,
  hostLabels,
  hosts,
  jobEvents,
  jobs,
  type NewJobRow,
} from '@vfio-fleet/db';
import { and, asc, eq, inArray, isNotNull, type SQL, sql } from 'drizzle-orm';
import { type AuditEntry, recordAudit } from '../audit/audit-log';
import { ServerError } from '../errors';
import { canonicalHash } from './canonical-hash';
import {
  activeJobsOf,
  buildPreview,
  type HostForPlanning,
  type JobPreview,
  loadHostForPlanning,
  requireTarget,
  requireUuid,
} from './job-preview';
import {
  type Actor,
  deadlineFrom,
  isActiveGroupViolation,
  previewProblem,
  readOnlyProblem,
  requireAcknowledged,
  requirePersistTarget,
} from './job-rules';
import { type JobView, selectJobsWithNames, toJobView } from './job-views';

export interface BulkInput {
  /** 4 hex digits, as in `lspci -n`. */
  vendorId: string;
  deviceId: string;
  /** Hosts carrying every one of these labels. */
  labels?: Record<string, string>;
  hostIds?: string[];
  target: 'vfio' | 'host';
}

/** One group that would get a job: its preview, plus the devices of the type that led to it. */
export interface BulkEntry extends JobPreview {
  iommuGroup: number;
  matched: string[];
}

export type BulkSkipCode = 'active-job' | 'read-only' | 'refused' | 'already-done' | 'needs-force';

export interface BulkSkip {
  hostId: string;
  hostname: string;
  iommuGroup: number;
  address: string;
  code: BulkSkipCode;
  reason: string;
}

export interface BulkPreview {
  target: 'vfio' | 'host';
  vendorId: string;
  deviceId: string;
  /** In creation order: by hostname, then group. With a canary, the first is the canary. */
  entries: BulkEntry[];
  skipped: BulkSkip[];
  /** Hosts with at least one entry, and how many of them are offline (their jobs wait). */
  hosts: number;
  offlineHosts: number;
  previewHash: string;
}

export interface BulkResult {
  bulkId: string;
  canaryJobId: string | null;
  jobs: JobView[];
  skipped: BulkSkip[];
}

/** Bounds a request's host list: the API's zod bounds it too; this keeps the SQL sane. */
const MAX_BULK_HOST_IDS = 10_000;

function hexId(value: string, what: string): string {
  const id = value.toLowerCase();
  if (!/^[0-9a-f]{4}$/.test(id)) {
    throw new ServerError('bad-request', `${what} must be 4 hex digits`);
  }
  return id;
}

/**
 * One entry per (host, IOMMU group) holding devices of that type that can move: `ready` ones for
 * target vfio, ones bound to a vfio driver for target host. Offline hosts are included (their
 * jobs wait in the queue). Groups that cannot get a job are listed in `skipped`, with why.
 */
export async function previewBulk(db: Database, input: BulkInput): Promise<BulkPreview> {
  const target = requireTarget(input.target);
  const vendorId = hexId(input.vendorId, 'vendorId');
  const deviceId = hexId(input.deviceId, 'deviceId');
  const where: SQL[] = [
    eq(devices.vendorId, vendorId),
    eq(devices.deviceId, deviceId),
    isNotNull(devices.iommuGroup),
    target === 'vfio' ? eq(devices.status, 'ready') : isNotNull(devices.driver),
  ];
  for (const [key, value] of Object.entries(input.labels ?? {})) {
    where.push(
      sql`exists (select 1 from ${hostLabels} where ${hostLabels.hostId} = ${devices.hostId} and ${hostLabels.key} = ${key} and ${hostLabels.value} = ${value})`,
    );
  }
  if (input.hostIds !== undefined) {
    if (input.hostIds.length > MAX_BULK_HOST_IDS) {
      throw new ServerError('bad-request', `at most ${MAX_BULK_HOST_IDS} hostIds`);
    }
    for (const id of input.hostIds) requireUuid(id, 'hostIds[]');
    // An empty list selects no host, as `IN ()` would.
    where.push(input.hostIds.length === 0 ? sql`false` : inArray(devices.hostId, input.hostIds));
  }
  const rows = await db
    .select({
      hostId: devices.hostId,
      address: devices.address,
      iommuGroup: devices.iommuGroup,
      driver: devices.driver,
    })
    .from(devices)
    .innerJoin(hosts, eq(hosts.id, devices.hostId))
    .where(and(...where))
    .orderBy(asc(hosts.hostname), asc(hosts.id), asc(devices.iommuGroup), asc(devices.address));

  // Group per (host, group), keeping the query's order: hostname, host, group, address.
  const groups: { hostId: string; iommuGroup: number; matched: string[] }[] = [];
  for (const row of rows) {
    if (row.iommuGroup === null) continue;
    // Target host: only devices a vfio driver holds (SQL cannot say isVfioDriverName's rule).
    if (target === 'host' && (row.driver === null || !isVfioDriverName(row.driver))) continue;
    const last = groups.at(-1);
    if (last !== undefined && last.hostId === row.hostId && last.iommuGroup === row.iommuGroup) {
      last.matched.push(row.address);
    } else {
      groups.push({ hostId: row.hostId, iommuGroup: row.iommuGroup, matched: [row.address] });
    }
  }

  const hostIds = [...new Set(groups.map((g) => g.hostId))];
  const loaded = new Map<string, HostForPlanning>();
  for (const hostId of hostIds) loaded.set(hostId, await loadHostForPlanning(db, hostId));
  const active = await activeJobsOf(db, hostIds);

  const entries: BulkEntry[] = [];
  const skipped: BulkSkip[] = [];
  for (const group of groups) {
    const host = loaded.get(group.hostId);
    const address = group.matched[0];
    if (host === undefined || address === undefined) continue;
    const preview = buildPreview(host, address, target, active);
    const skip = (code: BulkSkipCode, reason: string) =>
      skipped.push({
        hostId: host.id,
        hostname: host.hostname,
        iommuGroup: group.iommuGroup,
        address,
        code,
        reason,
      });
    const readOnly = readOnlyProblem(host.hostname, host.allowRebind);
    if (readOnly !== null) {
      skip('read-only', readOnly);
    } else if (preview.activeJobId !== null) {
      skip(
        'active-job',
        `IOMMU group ${group.iommuGroup} on ${host.hostname} already has an active job ${preview.activeJobId}`,
      );
    } else if (preview.refusal !== null) {
      skip('refused', `${preview.refusal.code}: ${preview.refusal.message}`);
    } else if (preview.plan?.alreadyDone === true) {
      skip('already-done', `IOMMU group ${group.iommuGroup} is already on its vfio drivers`);
    } else {
      entries.push({ ...preview, iommuGroup: group.iommuGroup, matched: group.matched });
    }
  }
  const entryHosts = new Set(entries.map((e) => e.hostId));
  const offline = new Set(entries.filter((e) => !e.hostOnline).map((e) => e.hostId));
  return {
    target,
    vendorId,
    deviceId,
    entries,
    skipped,
    hosts: entryHosts.size,
    offlineHosts: offline.size,
    previewHash: canonicalHash({
      target,
      vendorId,
      deviceId,
      entries: entries.map((e) => [e.hostId, e.iommuGroup, e.address, e.previewHash]),
      skipped: skipped.map((s) => [s.hostId, s.iommuGroup, s.address, s.code]),
    }),
  };
}

export interface CreateBulkInput extends BulkInput {
  canary: boolean;
  force?: boolean;
  /** Keep each move to vfio across reboots. */
  persist?: boolean;
  acknowledge: true;
  previewHash: string;
  deadlineSeconds?: number;
}

/** Rows per INSERT: a job row binds about a dozen parameters, far below the 65,535 cap. */
const JOB_ROWS_PER_STATEMENT = 1000;

/**
 * Re-previews inside the transaction (the hash must match), then inserts every job, its event and
 * the audit rows ('bulk-created', and 'job-created' per job so each host's trail shows it) in one
 * transaction; after the commit, wakes each host once.
 */
export async function createBulk(
  db: Database,
  actor: Actor,
  input: CreateBulkInput,
  wake?: (hostId: string) => void,
): Promise<BulkResult> {
  requireAcknowledged(input.acknowledge);
  const deadline = deadlineFrom(input.deadlineSeconds);
  const force = input.force === true;
  const persist = input.persist === true;
  requirePersistTarget(requireTarget(input.target), persist);
  const bulkId = randomUUID();
  let created: { rows: NewJobRow[]; skipped: BulkSkip[]; canaryJobId: string | null };
  try {
    created = await db.transaction(async (tx) => {
      const preview = await previewBulk(tx, input);
      if (preview.previewHash !== input.previewHash) {
        throw new ServerError('conflict', 'the fleet changed since the preview; preview again');
      }
      const skipped = [...preview.skipped];
      const creating: BulkEntry[] = [];
      for (const entry of preview.entries) {
        const problem = previewProblem(entry, force, persist);
        if (problem === null) {
          creating.push(entry);
          continue;
        }
        skipped.push({
          hostId: entry.hostId,
          hostname: entry.hostname,
          iommuGroup: entry.iommuGroup,
          address: entry.address,
          code: entry.needsForce.length > 0 && !force ? 'needs-force' : 'refused',
          reason: problem,
        });
      }
      if (creating.length === 0) {
        throw new ServerError(
          'conflict',
          `no IOMMU group of ${preview.vendorId}:${preview.deviceId} can get a job (${skipped.length} skipped)`,
        );
      }
      // Ids minted here, so the dependents can name the canary in the same statements.
      const canaryJobId = input.canary ? randomUUID() : null;
      const rows: (NewJobRow & { id: string })[] = creating.map((entry, i) => ({
        id: i === 0 && canaryJobId !== null ? canaryJobId : randomUUID(),
        hostId: entry.hostId,
        iommuGroup: entry.iommuGroup,
        address: entry.address,
        target: entry.target,
        force,
        persist,
        state: 'queued',
        preview: entry,
        previewHash: entry.previewHash,
        createdBy: actor.userId,
        deadline,
        bulkId,
        canaryOf: canaryJobId !== null && i > 0 ? canaryJobId : null,
      }));
      // The canary first, in a statement of its own: its dependents reference it.
      const [first, ...rest] = rows;
      if (first !== undefined) await tx.insert(jobs).values(first);
      for (const chunk of chunks(rest, JOB_ROWS_PER_STATEMENT)) await tx.insert(jobs).values(chunk);
      for (const chunk of chunks(rows, JOB_ROWS_PER_STATEMENT)) {
        await tx.insert(jobEvents).values(
          chunk.map((row) => ({
            jobId: row.id,
            fromState: null,
            toState: 'queued',
            message:
              row.canaryOf === null || row.canaryOf === undefined
                ? `created by ${actor.username} (bulk ${bulkId}${canaryJobId === row.id ? ', canary' : ''})`
                : `created by ${actor.username} (bulk ${bulkId}); waits for canary ${row.canaryOf}`,
            data: { bulkId, previewHash: row.previewHash, force, persist },
          })),
        );
      }
      const audit: AuditEntry[] = [
        {
          userId: actor.userId,
          username: actor.username,
          action: 'bulk-created',
          detail: {
            bulkId,
            target: preview.target,
            vendorId: preview.vendorId,
            deviceId: preview.deviceId,
            labels: input.labels ?? null,
            hostIds: input.hostIds ?? null,
            canary: input.canary,
            canaryJobId,
            force,
            persist,
            deadline: deadline.toISOString(),
            jobIds: rows.map((r) => r.id),
            skipped: skipped.map(({ hostId, iommuGroup, code }) => ({ hostId, iommuGroup, code })),
          },
        },
        ...creating.map((entry, i) => ({
          userId: actor.userId,
          username: actor.username,
          action: 'job-created',
          hostId: entry.hostId,
          iommuGroup: entry.iommuGroup,
          address: entry.address,
          detail: {
            jobId: rows[i]?.id,
            bulkId,
            canaryOf: rows[i]?.canaryOf ?? null,
            target: entry.target,
            force,
            persist,
            deadline: deadline.toISOString(),
            previewHash: entry.previewHash,
            driversBefore: entry.plan?.preconditions ?? [],
            devices: entry.plan?.devices ?? [],
          },
        })),
      ];
      await recordAudit(tx, audit);
      return { rows, skipped, canaryJobId };
    });
  } catch (error) {
    if (isActiveGroupViolation(error)) {
      throw new ServerError(
        'conflict',
        'a group of this bulk got an active job since the preview; preview again',
      );
    }
    throw error;
  }
  for (const hostId of new Set(created.rows.map((r) => r.hostId))) wake?.(hostId);
  const order = new Map(created.rows.map((r, i) => [r.id, i]));
  const views = (await selectJobsWithNames(db).where(eq(jobs.bulkId, bulkId)))
    .map(toJobView)
    .sort((a, b) => (order.get(a.id) ?? 0) - (order.get(b.id) ?? 0));
  return { bulkId, canaryJobId: created.canaryJobId, jobs: views, skipped: created.skipped };
}
