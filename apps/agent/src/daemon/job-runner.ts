/**
 * Turns server `job` messages into executor runs and reports them: `job-accepted` at once, a
 * `job-step` per step as it happens, `job-result` at the end.
 *
 * Safety lives in the executor (read-only refusal, idempotency by job id, per-group locks, plans
 * recomputed from a fresh read, rollback); this file adds only what the wire needs: the deadline
 * check, and keeping results until they are written to a live socket, so an outcome reached while
 * the server was unreachable still reaches it after the reconnect. The protocol has no ack for a
 * result; a server that missed one anyway re-sends the job and gets the stored outcome.
 */
import type { AgentMessage, JobMessage, JobResultMessage } from '@vfio-fleet/core';
import type { Logger } from '../logger';
import type { JobOutcome, JobRequest, JobStepEvent } from '../rebind/executor';

/** The part of RebindExecutor the daemon uses. */
export interface JobExecutor {
  execute(job: JobRequest, onStep?: (event: JobStepEvent) => void): Promise<JobOutcome>;
}

export interface JobSink {
  /** Sends now; false when there is no live session. */
  send(message: AgentMessage): boolean;
  /** Sends; resolves true once the frame is written to the socket, false if it was not. */
  sendConfirmed(message: AgentMessage): Promise<boolean>;
}

export interface JobRunnerOptions {
  executor: JobExecutor;
  sink: JobSink;
  logger: Logger;
  now: () => number;
  /** Called after every job that may have changed bindings, so the inventory catches up at once. */
  finished: () => void;
}

export class JobRunner {
  /** Results produced and not yet written to a socket, by job id. */
  private readonly undelivered = new Map<string, JobResultMessage>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private accepting = true;

  constructor(private readonly options: JobRunnerOptions) {}

  start(): void {
    this.accepting = true;
  }

  /**
   * Stops taking jobs and waits for those running: a rebind cut off between two sysfs writes
   * would leave a group half-moved, and every step has its own timeout, so the wait is bounded.
   */
  async stop(): Promise<void> {
    this.accepting = false;
    await Promise.allSettled([...this.inFlight.values()]);
  }

  get running(): number {
    return this.inFlight.size;
  }

  handle(job: JobMessage): void {
    const { logger, sink } = this.options;
    const log = logger.child({ jobId: job.jobId, address: job.address, target: job.target });
    if (!this.accepting) {
      log.warn('job ignored: the agent is stopping (the server will re-send it)');
      return;
    }
    sink.send({ type: 'job-accepted', jobId: job.jobId });
    const pending = this.undelivered.get(job.jobId);
    if (pending !== undefined) {
      // Ran already; the result just has not gone out yet.
      void this.deliver(pending);
      return;
    }
    if (this.inFlight.has(job.jobId)) {
      log.info('job already running; its result follows when it ends');
      return;
    }
    const deadline = Date.parse(job.deadline);
    if (!(deadline > this.options.now())) {
      // Refused without touching the executor: a late job may no longer be what anyone wants.
      log.warn({ deadline: job.deadline }, 'job refused: its deadline has passed');
      const at = new Date(this.options.now()).toISOString();
      void this.deliver({
        type: 'job-result',
        jobId: job.jobId,
        status: 'refused',
        reason: {
          code: 'deadline-passed',
          message: `job ${job.jobId} arrived after its deadline ${job.deadline}; nothing was done`,
          reasons: [],
        },
        failedStep: null,
        kernelError: null,
        before: [],
        after: [],
        persistence: null,
        startedAt: at,
        finishedAt: at,
      });
      return;
    }
    log.info({ force: job.force, persist: job.persist }, 'job accepted');
    const { jobId, address, target, force, persist } = job;
    const run = this.options.executor
      .execute({ jobId, address, target, force, persist }, (event) => {
        // Steps are progress, not state: one lost with a dropped socket is not re-sent.
        sink.send({ type: 'job-step', ...event });
      })
      .then(async (outcome) => {
        log.info({ status: outcome.status, code: outcome.reason?.code ?? null }, 'job finished');
        this.options.finished();
        await this.deliver({ type: 'job-result', ...outcome });
      })
      .catch((error: unknown) => {
        // The executor turns host states into outcomes; this is a bug, not a refusal.
        log.error({ err: error }, 'job crashed');
      })
      .finally(() => {
        this.inFlight.delete(job.jobId);
      });
    this.inFlight.set(job.jobId, run);
  }

  /** A new session: everything that did not make it out before goes now, oldest first. */
  connected(): void {
    for (const result of [...this.undelivered.values()]) void this.deliver(result);
  }

  private async deliver(result: JobResultMessage): Promise<void> {
    this.undelivered.set(result.jobId, result);
    if (await this.options.sink.sendConfirmed(result)) {
      // Only if no newer copy replaced it meanwhile (it would be the same outcome anyway).
      if (this.undelivered.get(result.jobId) === result) this.undelivered.delete(result.jobId);
    } else {
      this.options.logger.info({ jobId: result.jobId }, 'job result kept for the next session');
    }
  }
}
