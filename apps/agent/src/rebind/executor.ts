/**
 * Executes rebind jobs: moves a device's whole IOMMU group to vfio or back, verifies every step
 * against what the kernel then reports, and rolls back on any failure.
 *
 * Safety rules, in the order a job meets them:
 * - Read-only unless the agent was started with --allow-rebind: a server alone cannot make an
 *   agent write to sysfs.
 * - The job id is an idempotency key: a repeated id gets the first run's outcome, never a rerun.
 * - The plan is recomputed here with core's planRebind from the host as read now, under the
 *   group's lock; a plan a server sent is never trusted.
 * - Refusals (host-critical, blocked...) can never be forced; `force` only lets warning-severity
 *   reasons (an SR-IOV PF with VFs, no reset...) through.
 * - Preconditions are re-read right before the first write, so a race with another tool shows up
 *   as a refusal, not as a rollback to a state nobody had.
 * - Every step has a timeout; on any failure the plan's rollback runs (each step best-effort) and
 *   every device is compared to its recorded driver and driver_override.
 *
 * Nothing happens at construction: restarting the agent never touches a binding.
 */
import path from 'node:path';
import {
  type HostSnapshot,
  type KernelIo,
  normalizePciAddress,
  planRebind,
  type ReadinessReason,
  warningsNeedingForce,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { collectHost } from '../inventory/collect';
import { lockedReaderFor } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';
import { applyPersistence } from './bindings-file';
import { GroupBusyError, GroupLocks } from './group-lock';
import { heldSincePlan } from './held-since-plan';
import { hostDriverExpectations, recordHostDrivers } from './host-drivers';
import {
  type Claim,
  type DeviceBinding,
  JOB_ID_PATTERN,
  type JobOutcome,
  JobStore,
} from './job-store';
import { rollBack } from './rollback';
import {
  differences,
  errorMessage,
  type Failure,
  type JobStepEvent,
  StepRunner,
} from './step-runner';
import { STUCK_IN_KERNEL } from './stuck-outcome';

export type { DeviceBinding, JobOutcome, JobPhase, JobStatus, KernelErrorInfo } from './job-store';
export type { JobStepEvent } from './step-runner';

export interface JobRequest {
  jobId: string;
  address: string;
  target: 'vfio' | 'host';
  force: boolean;
  /** Keep a move to vfio across reboots (bindings.json); default not. A restore always forgets. */
  persist?: boolean;
}

export interface ExecutorDeps {
  fs: HostFs;
  io: KernelIo;
  stateDir: string;
  allowRebind: boolean;
  pciIdsPath?: string | undefined;
  /** Per step; a write still pending after it counts as failed with ETIMEDOUT. Default 30 s. */
  stepTimeoutMs?: number;
  /** How long a job waits for its IOMMU group before it is refused `group-busy`. Default 60 s. */
  lockWaitMs?: number;
  logger: Logger;
  now?: () => Date;
}

export const DEFAULT_STEP_TIMEOUT_MS = 30_000;
export const DEFAULT_LOCK_WAIT_MS = 60_000;
/** Jobs in flight in this process, by state dir and job id: shared by every executor instance. */
const RUNNING = new Map<string, Promise<JobOutcome>>();

export class RebindExecutor {
  private readonly deps: ExecutorDeps;
  private readonly store: JobStore;
  private readonly locks: GroupLocks;
  private readonly steps: StepRunner;

  constructor(deps: ExecutorDeps) {
    // Only remembers its dependencies: no read, no write, no recovery of half-done jobs here.
    this.deps = deps;
    this.store = new JobStore(deps.stateDir);
    this.locks = new GroupLocks(path.join(deps.stateDir, 'locks'));
    this.steps = new StepRunner({
      fs: deps.fs,
      io: deps.io,
      stepTimeoutMs: deps.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS,
      logger: deps.logger,
      now: () => this.now(),
    });
  }

  /**
   * Runs the job once per job id. A call with an id that is running awaits that run; an id that
   * ran before returns its stored outcome. Never rejects for host states: those are outcomes.
   */
  execute(job: JobRequest, onStep?: (e: JobStepEvent) => void): Promise<JobOutcome> {
    const key = `${path.resolve(this.deps.stateDir)}\0${job.jobId}`;
    const inFlight = RUNNING.get(key);
    if (inFlight !== undefined) return inFlight;
    const run = this.executeOnce(job, onStep ?? (() => undefined)).finally(() => {
      RUNNING.delete(key);
    });
    RUNNING.set(key, run);
    return run;
  }

  private now(): Date {
    return this.deps.now?.() ?? new Date();
  }

  private async executeOnce(
    job: JobRequest,
    onStep: (e: JobStepEvent) => void,
  ): Promise<JobOutcome> {
    const startedAt = this.now().toISOString();
    const log = this.deps.logger.child({ jobId: job.jobId, address: job.address });
    // Neither refusal is stored: no job ran, and a read-only agent must not need a writable state dir.
    if (!JOB_ID_PATTERN.test(job.jobId)) {
      return this.refused(
        job,
        startedAt,
        'invalid-job-id',
        `invalid job id ${JSON.stringify(job.jobId)}: expected letters, digits, _ . : - (at most 64)`,
      );
    }
    if (!this.deps.allowRebind) {
      log.info('rebind refused: agent is read-only');
      return this.refused(
        job,
        startedAt,
        'read-only',
        'this agent is read-only, nothing was written: start the agent with --allow-rebind to let it rebind devices',
      );
    }

    let claim: Claim;
    try {
      const stored = await this.store.read(job.jobId);
      if (stored !== null) {
        log.info({ status: stored.status }, 'job seen before: returning its stored outcome');
        return stored;
      }
      claim = await this.store.claim(job.jobId);
    } catch (error) {
      // An unwritable state dir or a damaged record: the job cannot be made idempotent, so it
      // does not run. Not stored either (the store is what failed).
      log.error({ err: error }, 'job store unusable');
      return this.refused(
        job,
        startedAt,
        'state-unavailable',
        `cannot record job ${job.jobId} in ${this.store.dir}: ${errorMessage(error)}`,
      );
    }
    switch (claim.kind) {
      case 'stored':
        return claim.outcome;
      case 'running-elsewhere':
        return this.refused(
          job,
          startedAt,
          'job-running',
          `job ${job.jobId} is being run by another agent process (pid ${claim.pid})`,
        );
      case 'interrupted': {
        // The earlier run stopped between writes: the host may be half-way. Running it again
        // would plan from that half state, so the job ends here and the operator rescans.
        const outcome: JobOutcome = {
          ...this.emptyOutcome(job, startedAt, 'failed'),
          reason: {
            code: 'interrupted',
            message: `job ${job.jobId} was interrupted (agent pid ${claim.pid ?? '?'} stopped while it ran); rescan the host and send a new job`,
            reasons: [],
          },
        };
        await this.storeOutcome(outcome, log);
        return outcome;
      }
      case 'claimed':
        break;
    }

    let outcome: JobOutcome;
    try {
      outcome = await this.run(job, startedAt, onStep, log);
    } catch (error) {
      // Steps turn their errors into outcomes and HostFs reads host states as nulls, so this is
      // reading the host or taking the lock failing, before any write.
      log.error({ err: error }, 'job failed unexpectedly');
      outcome = {
        ...this.emptyOutcome(job, startedAt, 'failed'),
        reason: {
          code: 'internal-error',
          message: `job ${job.jobId} failed: ${errorMessage(error)}`,
          reasons: [],
        },
      };
    }
    await this.storeOutcome(outcome, log);
    log.info({ status: outcome.status, code: outcome.reason?.code ?? null }, 'job finished');
    return outcome;
  }

  /** What a later restore checks against; a failure to record only weakens that check. */
  private async recordHostDrivers(
    snapshot: HostSnapshot,
    before: readonly DeviceBinding[],
    log: Logger,
  ): Promise<void> {
    try {
      await recordHostDrivers(this.deps.stateDir, snapshot, before);
    } catch (error) {
      log.warn({ err: error }, 'could not record the host drivers for a later restore');
    }
  }

  private async storeOutcome(outcome: JobOutcome, log: Logger): Promise<void> {
    try {
      await this.store.write(outcome);
    } catch (error) {
      // The host may already have changed: the caller must still learn how. The marker stays, so
      // a re-sent job id is reported interrupted rather than run a second time.
      log.error({ err: error }, 'could not store the job outcome');
    }
  }

  private async run(
    job: JobRequest,
    startedAt: string,
    onStep: (e: JobStepEvent) => void,
    log: Logger,
  ): Promise<JobOutcome> {
    // A first read only to learn which group to lock; the plan is made after, under the lock.
    const first = await this.collect();
    const initial = planRebind(first, job.address, job.target);
    if (!initial.ok && ['unknown-device', 'not-endpoint'].includes(initial.refusal.code)) {
      const { code, message, reasons } = initial.refusal;
      return this.refused(job, startedAt, code, message, reasons);
    }
    // planRebind accepted the address as a PCI address, so it normalizes.
    const address = normalizePciAddress(job.address);
    const group = first.devices.find((d) => d.address === address)?.iommuGroup ?? null;
    const lockKey = group === null ? `device-${address}` : `group-${group}`;

    let lease: Awaited<ReturnType<GroupLocks['acquire']>>;
    try {
      lease = await this.locks.acquire(lockKey, this.deps.lockWaitMs ?? DEFAULT_LOCK_WAIT_MS);
    } catch (error) {
      if (!(error instanceof GroupBusyError)) throw error;
      return this.refused(job, startedAt, 'group-busy', `${lockKey} is busy: ${error.message}`);
    }
    try {
      return await this.runLocked(job, startedAt, onStep, log, group);
    } finally {
      await lease.release();
    }
  }

  private async runLocked(
    job: JobRequest,
    startedAt: string,
    onStep: (e: JobStepEvent) => void,
    log: Logger,
    lockedGroup: number | null,
  ): Promise<JobOutcome> {
    const snapshot = await this.collect();
    // A restore must end each device on the driver it had, not merely off vfio.
    const hostDrivers =
      job.target === 'host'
        ? await hostDriverExpectations(this.deps.fs, this.deps.stateDir, snapshot)
        : undefined;
    const result = planRebind(snapshot, job.address, job.target, { hostDrivers });
    if (!result.ok) {
      const { code, message, reasons } = result.refusal;
      return this.refused(job, startedAt, code, message, reasons);
    }
    const plan = result.plan;
    if (plan.iommuGroup !== lockedGroup) {
      return this.refused(
        job,
        startedAt,
        'precondition-drift',
        `${plan.address} moved from IOMMU group ${lockedGroup ?? 'none'} to ${plan.iommuGroup ?? 'none'} while the job waited`,
      );
    }
    const needForce = warningsNeedingForce(plan);
    if (needForce.length > 0 && !job.force) {
      return this.refused(
        job,
        startedAt,
        'needs-force',
        `moving ${plan.address} to ${plan.target} needs force: ${needForce.map((r) => r.code).join(', ')}`,
        needForce,
      );
    }

    // Re-read right before the first write: the plan came from a snapshot, and another tool
    // (driverctl, a udev rule, an operator) may have changed a binding since.
    const before = await this.steps.readBindings(plan.preconditions.map((p) => p.address));
    const drift = differences(plan.preconditions, before);
    if (drift.length > 0) {
      return {
        ...this.emptyOutcome(job, startedAt, 'refused'),
        reason: {
          code: 'precondition-drift',
          message: `the host changed since it was read: ${drift.join('; ')}`,
          reasons: [],
        },
        before,
        after: before,
      };
    }
    // A plan with nothing to write (already done) touches no device, held or not.
    const held = plan.steps.length === 0 ? null : await heldSincePlan(this.deps.fs, plan);
    if (held !== null) {
      return {
        ...this.emptyOutcome(job, startedAt, 'refused'),
        reason: { code: 'in-use', message: held, reasons: [] },
        before,
        after: before,
      };
    }
    log.info(
      { group: plan.iommuGroup, target: plan.target, steps: plan.steps.length },
      'job starts',
    );

    let failure: Failure | null = null;
    let abandoned: Promise<void> | null = null;
    for (const [index, step] of plan.steps.entries()) {
      const { event, pending } = await this.steps.runStep(
        job.jobId,
        'forward',
        index,
        step,
        onStep,
      );
      abandoned = pending;
      if (event.status === 'failed' && event.error !== null) {
        const stuck = 'address' in step && this.steps.stuck(step.address) !== null;
        failure = {
          failedStep: { phase: 'forward', index, step },
          error: event.error,
          code: stuck
            ? STUCK_IN_KERNEL
            : event.error.errno === 'ETIMEDOUT'
              ? 'step-timeout'
              : event.error.errno === 'EINUSE'
                ? 'in-use'
                : 'step-failed',
        };
        break;
      }
    }
    if (failure === null) failure = await this.steps.checkDevNode(plan);

    if (failure === null) {
      if (plan.target === 'vfio') await this.recordHostDrivers(snapshot, before, log);
      const after = await this.steps.readBindings(before.map((b) => b.address));
      const finishedAt = this.now().toISOString();
      const persistence = await applyPersistence(this.deps.stateDir, {
        target: plan.target,
        persist: job.persist === true,
        force: job.force,
        after,
        devices: snapshot.devices,
        at: finishedAt,
      });
      if (persistence?.error) log.warn({ error: persistence.error }, 'bindings.json not updated');
      return {
        ...this.emptyOutcome(job, startedAt, 'succeeded'),
        before,
        after,
        persistence,
        finishedAt,
      };
    }

    return rollBack({
      steps: this.steps,
      jobId: job.jobId,
      plan,
      before,
      failure,
      abandoned,
      onStep,
      log,
      outcome: (status) => this.emptyOutcome(job, startedAt, status),
      now: () => this.now().toISOString(),
    });
  }

  private collect() {
    return collectHost(this.deps.fs, {
      pciIdsPath: this.deps.pciIdsPath ?? null,
      logger: this.deps.logger,
      lockedRead: lockedReaderFor(this.deps.io),
      ...(this.deps.now === undefined ? {} : { now: this.deps.now }),
    });
  }

  private emptyOutcome(
    job: JobRequest,
    startedAt: string,
    status: JobOutcome['status'],
  ): JobOutcome {
    return {
      jobId: job.jobId,
      status,
      reason: null,
      failedStep: null,
      kernelError: null,
      before: [],
      after: [],
      persistence: null,
      startedAt,
      finishedAt: this.now().toISOString(),
    };
  }

  private refused(
    job: JobRequest,
    startedAt: string,
    code: string,
    message: string,
    reasons: ReadinessReason[] = [],
  ): JobOutcome {
    return { ...this.emptyOutcome(job, startedAt, 'refused'), reason: { code, message, reasons } };
  }
}
