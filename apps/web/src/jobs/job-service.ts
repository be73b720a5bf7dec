/**
 * The jobs service: what the API's jobs router calls. Previews, creating (one job or a bulk, with
 * an optional canary), cancelling, listing. Each user action is one transaction that writes the
 * job, its first event and the audit row together; the caller's `wake`/`notifyCancel` runs only
 * after the commit, so the dispatcher never sees a job that is not there yet.
 *
 * Role checks are the API's; these functions take the Actor to record who did it.
 */
import {
  ACTIVE_JOB_STATES,
  type Database,
  hosts,
  JOB_STATES,
  type JobRow,
  type JobState,
  jobEvents,
  jobs,
  users,
} from '@vfio-fleet/db';
import { and, asc, desc, eq, inArray, type SQL, sql } from 'drizzle-orm';
import { z } from 'zod';
import { recordAudit } from '../audit/audit-log';
import { ServerError } from '../errors';
import {
  activeJobsOf,
  buildPreview,
  canonicalAddress,
  type JobPreview,
  loadHostForPlanning,
  requireTarget,
  requireUuid,
} from './job-preview';
import {
  type Actor,
  deadlineFrom,
  groupBusy,
  isActiveGroupViolation,
  MAX_JOB_PAGE,
  previewProblem,
  requireAcknowledged,
  requirePersistTarget,
} from './job-rules';
import {
  type JobEventView,
  type JobView,
  selectJobsWithNames,
  toJobEventView,
  toJobView,
} from './job-views';
import { afterJobTerminal, isTerminalJobState, recordJobEvent, transitionJob } from './transitions';

export {
  type BulkEntry,
  type BulkInput,
  type BulkPreview,
  type BulkResult,
  type BulkSkip,
  type CreateBulkInput,
  createBulk,
  previewBulk,
} from './bulk-jobs';
export type { JobPreview } from './job-preview';
export {
  type Actor,
  DEFAULT_DEADLINE_SECONDS,
  MAX_DEADLINE_SECONDS,
  MAX_JOB_PAGE,
  MIN_DEADLINE_SECONDS,
} from './job-rules';
export type { JobEventView, JobView } from './job-views';

// --- preview and create -------------------------------------------------------------------------

export interface PreviewInput {
  hostId: string;
  address: string;
  target: 'vfio' | 'host';
}

/** core's planRebind on the stored host state; unknown host or device → not-found. */
export async function previewJob(db: Database, input: PreviewInput): Promise<JobPreview> {
  const target = requireTarget(input.target);
  const address = canonicalAddress(input.address);
  const host = await loadHostForPlanning(db, input.hostId);
  if (!host.snapshot.devices.some((d) => d.address === address)) {
    throw new ServerError('not-found', `no PCI device ${address} on ${host.hostname}`);
  }
  return buildPreview(host, address, target, await activeJobsOf(db, [host.id]));
}

export interface CreateJobInput extends PreviewInput {
  force?: boolean;
  /** Keep the move to vfio across reboots (the agent re-applies it at start). */
  persist?: boolean;
  acknowledge: true;
  previewHash: string;
  deadlineSeconds?: number;
}

/**
 * Re-plans on the current state inside the transaction: the preview the caller acknowledged must
 * still be the current one. Inserts the queued job, its first event and the 'job-created' audit
 * row together, then (after the commit) calls `wake(hostId)`.
 */
export async function createJob(
  db: Database,
  actor: Actor,
  input: CreateJobInput,
  wake?: (hostId: string) => void,
): Promise<JobView> {
  requireAcknowledged(input.acknowledge);
  const deadline = deadlineFrom(input.deadlineSeconds);
  const force = input.force === true;
  const persist = input.persist === true;
  requirePersistTarget(requireTarget(input.target), persist);
  // Set inside the transaction once the group is known: the conflict message needs it.
  const seen: { group?: { hostname: string; iommuGroup: number } } = {};
  let job: JobRow;
  try {
    job = await db.transaction(async (tx) => {
      const preview = await previewJob(tx, input);
      const problem = previewProblem(preview, force, persist);
      if (problem !== null) throw new ServerError('conflict', problem);
      if (preview.previewHash !== input.previewHash) {
        throw new ServerError('conflict', 'the plan changed since the preview; preview again');
      }
      const iommuGroup = preview.iommuGroup;
      // previewProblem refused this already; repeated so the type narrows.
      if (iommuGroup === null) throw new ServerError('conflict', 'no IOMMU group');
      seen.group = { hostname: preview.hostname, iommuGroup };
      if (preview.activeJobId !== null) {
        throw groupBusy(iommuGroup, preview.hostname, preview.activeJobId);
      }
      const [row] = await tx
        .insert(jobs)
        .values({
          hostId: preview.hostId,
          iommuGroup,
          address: preview.address,
          target: preview.target,
          force,
          persist,
          state: 'queued',
          preview,
          previewHash: preview.previewHash,
          createdBy: actor.userId,
          deadline,
        })
        .returning();
      if (row === undefined) throw new Error('INSERT ... RETURNING returned no row');
      await tx.insert(jobEvents).values({
        jobId: row.id,
        fromState: null,
        toState: 'queued',
        message: `created by ${actor.username}`,
        data: { previewHash: preview.previewHash, force, persist },
      });
      await recordAudit(tx, {
        userId: actor.userId,
        username: actor.username,
        action: 'job-created',
        hostId: row.hostId,
        iommuGroup,
        address: row.address,
        detail: {
          jobId: row.id,
          target: row.target,
          force,
          persist,
          deadline: deadline.toISOString(),
          previewHash: preview.previewHash,
          driversBefore: preview.plan?.preconditions ?? [],
          devices: preview.plan?.devices ?? [],
        },
      });
      return row;
    });
  } catch (error) {
    const known = seen.group;
    if (known !== undefined && isActiveGroupViolation(error)) {
      // Another request (maybe another server process) won the race for the group after this
      // one's check: the partial unique index refused the insert. Name the winner.
      const activeId = await activeJobId(db, input.hostId, known.iommuGroup);
      throw groupBusy(known.iommuGroup, known.hostname, activeId);
    }
    throw error;
  }
  wake?.(job.hostId);
  return getJobView(db, job.id);
}

async function activeJobId(db: Database, hostId: string, iommuGroup: number) {
  const [row] = await db
    .select({ id: jobs.id })
    .from(jobs)
    .where(
      and(
        eq(jobs.hostId, hostId),
        eq(jobs.iommuGroup, iommuGroup),
        inArray(jobs.state, [...ACTIVE_JOB_STATES]),
      ),
    );
  return row?.id ?? null;
}

// --- cancel -------------------------------------------------------------------------------------

/**
 * queued → cancelled at once. dispatched/running: the agent decides (a rebind is never cut
 * between two sysfs writes), so this records the request and `notifyCancel` sends job-cancel;
 * asking again is a no-op. A finished job → conflict.
 */
export async function cancelJob(
  db: Database,
  actor: Actor,
  jobId: string,
  notifyCancel?: (job: JobRow) => void,
): Promise<JobView> {
  requireUuid(jobId, 'jobId');
  const requested = await db.transaction(async (tx): Promise<JobRow | null> => {
    const [job] = await tx.select().from(jobs).where(eq(jobs.id, jobId)).for('update');
    if (job === undefined) throw new ServerError('not-found', `no job ${jobId}`);
    const audit = {
      userId: actor.userId,
      username: actor.username,
      hostId: job.hostId,
      iommuGroup: job.iommuGroup,
      address: job.address,
    };
    if (isTerminalJobState(job.state)) {
      throw new ServerError('conflict', `job ${jobId} already ended: ${job.state}`);
    }
    if (job.state === 'queued') {
      const message = `cancelled by ${actor.username}`;
      const cancelled = await transitionJob(
        tx,
        jobId,
        ['queued'],
        'cancelled',
        { message },
        { reasonCode: 'cancelled', reasonMessage: message },
      );
      // The row is locked, so it cannot have left 'queued' since the SELECT.
      if (cancelled === null) throw new Error(`job ${jobId} left queued under its row lock`);
      await recordAudit(tx, {
        ...audit,
        action: 'job-cancelled',
        detail: { jobId, target: job.target, from: 'queued' },
      });
      await afterJobTerminal(tx, cancelled);
      return null;
    }
    if (job.cancelRequestedAt !== null) return null;
    const [updated] = await tx
      .update(jobs)
      .set({ cancelRequestedAt: new Date() })
      .where(eq(jobs.id, jobId))
      .returning();
    if (updated === undefined) throw new Error(`job ${jobId} vanished under its row lock`);
    await recordJobEvent(tx, jobId, job.state, `cancel requested by ${actor.username}`);
    await recordAudit(tx, {
      ...audit,
      action: 'job-cancel-requested',
      detail: { jobId, target: job.target, state: job.state },
    });
    return updated;
  });
  if (requested !== null) notifyCancel?.(requested);
  return getJobView(db, jobId);
}

// --- read ---------------------------------------------------------------------------------------

async function getJobView(db: Database, jobId: string): Promise<JobView> {
  const [row] = await selectJobsWithNames(db).where(eq(jobs.id, jobId));
  if (row === undefined) throw new ServerError('not-found', `no job ${jobId}`);
  return toJobView(row);
}

export async function getJob(
  db: Database,
  jobId: string,
): Promise<JobView & { events: JobEventView[] }> {
  requireUuid(jobId, 'jobId');
  const view = await getJobView(db, jobId);
  const events = await db
    .select()
    .from(jobEvents)
    .where(eq(jobEvents.jobId, jobId))
    .orderBy(asc(jobEvents.id));
  return { ...view, events: events.map(toJobEventView) };
}

export interface ListJobsInput {
  state?: JobState[];
  hostId?: string;
  bulkId?: string;
  limit: number;
  cursor?: string | null;
}

/**
 * created_at as exact text (microseconds, UTC). A JS Date keeps milliseconds only: a cursor built
 * from one would skip or repeat rows created within the same millisecond (a bulk creates hundreds
 * in one transaction, all with the same now()).
 */
const createdAtKey = sql<string>`to_char(${jobs.createdAt} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

const jobCursorSchema = z.tuple([
  z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/),
  z.uuid(),
]);

function encodeJobCursor(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

function decodeJobCursor(cursor: string): [string, string] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw new ServerError('bad-request', 'invalid cursor');
  }
  const result = jobCursorSchema.safeParse(parsed);
  if (!result.success) throw new ServerError('bad-request', 'invalid cursor');
  return result.data;
}

/** Newest first; keyset pagination on (created_at desc, id desc), so pages never shift. */
export async function listJobs(
  db: Database,
  input: ListJobsInput,
): Promise<{ items: JobView[]; nextCursor: string | null }> {
  if (!Number.isInteger(input.limit) || input.limit < 1 || input.limit > MAX_JOB_PAGE) {
    throw new ServerError('bad-request', `limit must be an integer from 1 to ${MAX_JOB_PAGE}`);
  }
  const where: SQL[] = [];
  if (input.state !== undefined) {
    for (const state of input.state) {
      if (!(JOB_STATES as readonly string[]).includes(state)) {
        throw new ServerError('bad-request', `unknown job state ${JSON.stringify(state)}`);
      }
    }
    // An empty filter matches nothing, as `state IN ()` would.
    if (input.state.length === 0) return { items: [], nextCursor: null };
    where.push(inArray(jobs.state, input.state));
  }
  if (input.hostId !== undefined) {
    requireUuid(input.hostId, 'hostId');
    where.push(eq(jobs.hostId, input.hostId));
  }
  if (input.bulkId !== undefined) {
    requireUuid(input.bulkId, 'bulkId');
    where.push(eq(jobs.bulkId, input.bulkId));
  }
  if (input.cursor !== undefined && input.cursor !== null) {
    const [createdAt, id] = decodeJobCursor(input.cursor);
    where.push(sql`(${jobs.createdAt}, ${jobs.id}) < (${createdAt}::timestamptz, ${id}::uuid)`);
  }
  const rows = await db
    .select({
      job: jobs,
      hostname: hosts.hostname,
      createdByName: users.username,
      key: createdAtKey,
    })
    .from(jobs)
    .innerJoin(hosts, eq(hosts.id, jobs.hostId))
    .leftJoin(users, eq(users.id, jobs.createdBy))
    .where(where.length > 0 ? and(...where) : undefined)
    .orderBy(desc(jobs.createdAt), desc(jobs.id))
    .limit(input.limit + 1);
  const page = rows.slice(0, input.limit);
  const last = page.at(-1);
  return {
    items: page.map(toJobView),
    nextCursor:
      rows.length > input.limit && last !== undefined
        ? encodeJobCursor(last.key, last.job.id)
        : null,
  };
}
