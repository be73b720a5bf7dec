/**
 * The job state machine's one way to move a job: a conditional UPDATE (`WHERE state IN (from)`)
 * and its job_events row in one transaction. Several server processes, a replayed agent message
 * and an operator's cancel may race for the same job; the condition makes exactly one of them
 * win, and the loser learns it from the null it gets back, without a lock held across messages.
 *
 *   queued → dispatched → running → succeeded | failed | rolled_back | cancelled | expired
 */
import {
  type JobResultMessage,
  type PlanPrecondition,
  planPreconditionSchema,
} from '@vfio-fleet/core';
import {
  type Database,
  type JobRow,
  type JobState,
  jobEvents,
  jobs,
  type NewJobRow,
} from '@vfio-fleet/db';
import { and, eq, inArray } from 'drizzle-orm';
import { z } from 'zod';
import { type AuditEntry, recordAudit } from '../audit/audit-log';

export const TERMINAL_JOB_STATES: readonly JobState[] = [
  'succeeded',
  'failed',
  'rolled_back',
  'cancelled',
  'expired',
];

export function isTerminalJobState(state: JobState): boolean {
  return TERMINAL_JOB_STATES.includes(state);
}

/** The columns a transition may write besides `state`. */
const SETTABLE = [
  'leaseUntil',
  'leaseOwner',
  'dispatchedAt',
  'acceptedAt',
  'finishedAt',
  'attempt',
  'result',
  'reasonCode',
  'reasonMessage',
  'cancelRequestedAt',
] as const satisfies readonly (keyof NewJobRow)[];
export type JobTransitionSet = Partial<Pick<NewJobRow, (typeof SETTABLE)[number]>>;

/**
 * Moves a job from one of `from` to `to` in one `UPDATE ... WHERE state IN (from) RETURNING`;
 * when it moved, inserts the job_events row in the same transaction. Returns the updated row, or
 * null when the job was not in one of `from` (a replay, a race lost to another process): then
 * nothing was written. A move into a terminal state sets `finished_at` unless `set` does.
 * The caller that moves a job into a terminal state also calls afterJobTerminal (same transaction).
 */
export async function transitionJob(
  db: Database,
  jobId: string,
  from: readonly JobState[],
  to: JobState,
  event: { message: string; data?: unknown },
  set: JobTransitionSet | Record<string, unknown> = {},
): Promise<JobRow | null> {
  if (from.length === 0) return null;
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(set)) {
    // `{ ...terminalStateOf(result) }` carries the state `to` already names: harmless when equal.
    if (key === 'state' && value === to) continue;
    // A misspelt column would otherwise be dropped silently by drizzle: fail loudly, it is a bug.
    if (!(SETTABLE as readonly string[]).includes(key)) {
      throw new Error(`transitionJob: column ${key} cannot be set by a transition`);
    }
    if (value !== undefined) values[key] = value;
  }
  if (isTerminalJobState(to) && values.finishedAt === undefined) values.finishedAt = new Date();
  return db.transaction(async (tx) => {
    let fromState: JobState | undefined = from.length === 1 ? from[0] : undefined;
    if (fromState === undefined) {
      // The UPDATE's RETURNING shows only the new row; with several candidate states, lock the
      // row first to learn which one the event leaves (the UPDATE below still checks it).
      const [current] = await tx
        .select({ state: jobs.state })
        .from(jobs)
        .where(and(eq(jobs.id, jobId), inArray(jobs.state, [...from])))
        .for('update');
      if (current === undefined) return null;
      fromState = current.state;
    }
    const [row] = await tx
      .update(jobs)
      .set({ ...(values as JobTransitionSet), state: to })
      .where(and(eq(jobs.id, jobId), inArray(jobs.state, [...from])))
      .returning();
    if (row === undefined) return null;
    await tx.insert(jobEvents).values({
      jobId,
      fromState,
      toState: to,
      message: event.message,
      data: event.data ?? null,
    });
    return row;
  });
}

/** Appends an event without a state change (job-step progress, re-delivery notes). */
export async function recordJobEvent(
  db: Database,
  jobId: string,
  state: JobState,
  message: string,
  data?: unknown,
): Promise<void> {
  await db.insert(jobEvents).values({
    jobId,
    fromState: state,
    toState: state,
    message,
    data: data ?? null,
  });
}

/** Maps an agent's job-result to the job's terminal state and its reason. */
export function terminalStateOf(result: JobResultMessage): {
  state: JobState;
  reasonCode: string | null;
  reasonMessage: string | null;
} {
  const reason = reasonOf(result);
  switch (result.status) {
    case 'succeeded':
      return { state: 'succeeded', ...reason };
    case 'rolled_back':
      return { state: 'rolled_back', ...reason };
    case 'failed':
      return { state: 'failed', ...reason };
    case 'refused': {
      const code = result.reason?.code ?? '';
      // 'deadline-passed' today; any deadline refusal an agent may name later is an expiry too.
      if (code.includes('deadline')) return { state: 'expired', ...reason };
      if (code === 'cancelled') return { state: 'cancelled', ...reason };
      return { state: 'failed', ...reason };
    }
  }
}

function reasonOf(result: JobResultMessage): {
  reasonCode: string | null;
  reasonMessage: string | null;
} {
  if (result.reason !== null) {
    return { reasonCode: result.reason.code, reasonMessage: result.reason.message };
  }
  if (result.kernelError !== null) {
    const step = result.failedStep;
    const where = step === null ? '' : ` at ${step.phase} step ${step.index} (${step.step.action})`;
    return {
      reasonCode: 'step-failed',
      reasonMessage: `${result.kernelError.errno}${where}: ${result.kernelError.message}`,
    };
  }
  if (result.status === 'succeeded') return { reasonCode: null, reasonMessage: null };
  return { reasonCode: result.status, reasonMessage: null };
}

/** The parts of a stored job-result the audit needs; parsed, since jsonb is whatever was stored. */
const storedResultSchema = z.object({
  status: z.string(),
  before: z.array(planPreconditionSchema),
  after: z.array(planPreconditionSchema),
});
const storedPreviewSchema = z.object({
  plan: z.object({ preconditions: z.array(planPreconditionSchema) }).nullable(),
});

function driversBefore(job: JobRow): PlanPrecondition[] | null {
  const result = storedResultSchema.safeParse(job.result);
  if (result.success) return result.data.before;
  const preview = storedPreviewSchema.safeParse(job.preview);
  return preview.success ? (preview.data.plan?.preconditions ?? null) : null;
}

function finishedEntry(job: JobRow): AuditEntry {
  const result = storedResultSchema.safeParse(job.result);
  return {
    userId: null,
    username: null,
    action: 'job-finished',
    hostId: job.hostId,
    iommuGroup: job.iommuGroup,
    address: job.address,
    detail: {
      jobId: job.id,
      target: job.target,
      force: job.force,
      state: job.state,
      reasonCode: job.reasonCode,
      reasonMessage: job.reasonMessage,
      createdBy: job.createdBy,
      bulkId: job.bulkId,
      canaryOf: job.canaryOf,
      driversBefore: driversBefore(job),
      // Null when the agent never reported (cancelled before delivery, expired while waiting).
      driversAfter: result.success ? result.data.after : null,
      result: result.success ? result.data.status : null,
    },
  };
}

/**
 * Called by whoever moved a job into a terminal state, in the same transaction: writes the
 * 'job-finished' audit row, and when a canary ends in anything but success, cancels every job
 * still queued behind it (reason 'canary-failed') with their events and audit rows, in bulk
 * statements. A canary that succeeded needs nothing: the dispatcher's gate opens by itself.
 */
export async function afterJobTerminal(db: Database, job: JobRow): Promise<void> {
  const entries: AuditEntry[] = [finishedEntry(job)];
  if (job.state !== 'succeeded') {
    const message = `canary job ${job.id} ended ${job.state}${job.reasonCode === null ? '' : ` (${job.reasonCode})`}`;
    const cancelled = await db
      .update(jobs)
      .set({
        state: 'cancelled',
        finishedAt: new Date(),
        reasonCode: 'canary-failed',
        reasonMessage: message,
      })
      .where(and(eq(jobs.canaryOf, job.id), eq(jobs.state, 'queued')))
      .returning();
    if (cancelled.length > 0) {
      // 6 parameters an event: a thousand per statement stays far below the bind-parameter cap.
      for (let i = 0; i < cancelled.length; i += 1000) {
        await db.insert(jobEvents).values(
          cancelled.slice(i, i + 1000).map((dependent) => ({
            jobId: dependent.id,
            fromState: 'queued',
            toState: 'cancelled',
            message,
            data: { canary: job.id, canaryState: job.state },
          })),
        );
      }
      entries.push(...cancelled.map(finishedEntry));
    }
  }
  await recordAudit(db, entries);
}
