/**
 * Job outcomes on disk, keyed by job id. The job id is an idempotency key: a server that re-sends
 * a job after a reconnect, or an operator re-running a command, must get the first run's outcome,
 * never a second rebind. A `.running` marker, created exclusively when a job starts, tells a later
 * agent that a job was cut off (agent killed mid-job) rather than never started.
 *
 * Refusals (nothing was written to the host) are kept apart, in `jobs/refused/`, and only the
 * newest KEEP_REFUSED of them (pruned each time a quarter more have piled up): a server can send any number of jobs that are refused, and each
 * used to leave a file for good. Forgetting an old refusal is safe: a re-sent job id that is no
 * longer known is planned again from a fresh read (and refused again, or past its deadline).
 */
import { open, readdir, readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import {
  type JobPersistence,
  jobPersistenceSchema,
  type PlanStep,
  planPreconditionSchema,
  planStepSchema,
  type ReadinessReason,
  readinessReasonSchema,
} from '@vfio-fleet/core';
import { processAlive } from '@vfio-fleet/local-state';
import { z } from 'zod';
import { ensureDir, errnoOf, readOptional, writeFileAtomic } from './state-files';

/** The wire protocol's id rule: it also keeps a job id safe as a file name (no `/`, no `..`). */
export const JOB_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/;

export interface DeviceBinding {
  address: string;
  driver: string | null;
  driverOverride: string | null;
}

export interface KernelErrorInfo {
  errno: string;
  message: string;
}

export type JobStatus = 'succeeded' | 'failed' | 'rolled_back' | 'refused';
export type JobPhase = 'forward' | 'rollback';

export interface JobOutcome {
  jobId: string;
  status: JobStatus;
  reason: { code: string; message: string; reasons: ReadinessReason[] } | null;
  failedStep: { phase: JobPhase; index: number; step: PlanStep } | null;
  kernelError: KernelErrorInfo | null;
  before: DeviceBinding[];
  after: DeviceBinding[];
  /** What it changed in bindings.json (rebind/persist); null when it changed nothing there. */
  persistence: JobPersistence | null;
  startedAt: string;
  finishedAt: string;
}

const phaseSchema = z.enum(['forward', 'rollback']);

/** Checks a stored outcome on the way back in: a damaged file must not pass as a result. */
export const jobOutcomeSchema: z.ZodType<JobOutcome> = z.object({
  jobId: z.string().regex(JOB_ID_PATTERN),
  status: z.enum(['succeeded', 'failed', 'rolled_back', 'refused']),
  reason: z
    .object({
      code: z.string(),
      message: z.string(),
      reasons: z.array(readinessReasonSchema),
    })
    .nullable(),
  failedStep: z
    .object({ phase: phaseSchema, index: z.number().int().nonnegative(), step: planStepSchema })
    .nullable(),
  kernelError: z.object({ errno: z.string(), message: z.string() }).nullable(),
  before: z.array(planPreconditionSchema),
  after: z.array(planPreconditionSchema),
  // Outcomes stored before the field existed read as null.
  persistence: jobPersistenceSchema.nullable().default(null),
  startedAt: z.string(),
  finishedAt: z.string(),
});

export type Claim =
  | { kind: 'claimed' }
  | { kind: 'stored'; outcome: JobOutcome }
  /** Another live process runs this job id. */
  | { kind: 'running-elsewhere'; pid: number }
  /** A marker without an outcome whose owner is gone: the job was cut off mid-way. */
  | { kind: 'interrupted'; pid: number | null };

/** How many refused outcomes are kept (the newest, by when they finished). */
export const KEEP_REFUSED = 200;

export class JobStore {
  readonly dir: string;
  private readonly refusedDir: string;

  constructor(
    stateDir: string,
    private readonly keepRefused = KEEP_REFUSED,
  ) {
    this.dir = path.join(stateDir, 'jobs');
    this.refusedDir = path.join(this.dir, 'refused');
  }

  private outcomePath(jobId: string, status?: JobStatus): string {
    return path.join(status === 'refused' ? this.refusedDir : this.dir, `${jobId}.json`);
  }

  private markerPath(jobId: string): string {
    return path.join(this.dir, `${jobId}.running`);
  }

  async read(jobId: string): Promise<JobOutcome | null> {
    for (const file of [this.outcomePath(jobId), this.outcomePath(jobId, 'refused')]) {
      const text = await readOptional(file);
      if (text === null) continue;
      // A file that does not parse is treated as a stored failure, not as "never ran":
      // re-running a job whose record is damaged could rebind a device a second time.
      const parsed = jobOutcomeSchema.safeParse(safeJson(text));
      if (parsed.success) return parsed.data;
      throw new Error(`stored outcome ${file} is damaged: ${parsed.error.message}`);
    }
    return null;
  }

  /** Marks the job as started, exclusively; tells what is there when it already was. */
  async claim(jobId: string): Promise<Claim> {
    await ensureDir(this.dir);
    try {
      const handle = await open(this.markerPath(jobId), 'wx', 0o600);
      try {
        await handle.writeFile(`${process.pid}\n`, 'utf8');
      } finally {
        await handle.close();
      }
      return { kind: 'claimed' };
    } catch (error) {
      if (errnoOf(error) !== 'EEXIST') throw error;
    }
    const stored = await this.read(jobId);
    if (stored !== null) return { kind: 'stored', outcome: stored };
    const text = await readOptional(this.markerPath(jobId));
    const pid = text !== null && /^\d+$/.test(text.trim()) ? Number(text.trim()) : null;
    // Our own pid here is a previous agent's (pid reuse): this process tracks its own jobs in memory.
    if (pid !== null && pid !== process.pid && processAlive(pid)) {
      return { kind: 'running-elsewhere', pid };
    }
    return { kind: 'interrupted', pid };
  }

  /** Stores the outcome (atomically, 0600), then drops the marker (and old refusals). */
  async write(outcome: JobOutcome): Promise<void> {
    await writeFileAtomic(
      this.outcomePath(outcome.jobId, outcome.status),
      `${JSON.stringify(outcome, null, 2)}\n`,
    );
    await unlink(this.markerPath(outcome.jobId)).catch(() => undefined);
    if (outcome.status === 'refused') await this.pruneRefused();
  }

  /**
   * Removes all but the newest `keepRefused` refusals (by finishedAt, then file time), once a
   * quarter more have piled up: reading them all on every refusal would make a flood costlier.
   */
  private async pruneRefused(): Promise<void> {
    const names = (await readdir(this.refusedDir)).filter((n) => n.endsWith('.json'));
    if (names.length <= this.keepRefused + Math.floor(this.keepRefused / 4)) return;
    const entries = await Promise.all(
      names.map(async (name) => {
        const file = path.join(this.refusedDir, name);
        const text = await readFile(file, 'utf8').catch(() => null);
        const parsed = jobOutcomeSchema.safeParse(text === null ? null : safeJson(text));
        const finished = parsed.success ? Date.parse(parsed.data.finishedAt) : Number.NaN;
        const mtime = (await stat(file).catch(() => null))?.mtimeMs ?? 0;
        return { file, finished: Number.isNaN(finished) ? 0 : finished, mtime };
      }),
    );
    entries.sort((a, b) => a.finished - b.finished || a.mtime - b.mtime);
    for (const entry of entries.slice(0, entries.length - this.keepRefused)) {
      await unlink(entry.file).catch(() => undefined);
    }
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
