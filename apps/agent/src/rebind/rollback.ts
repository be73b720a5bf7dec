/**
 * A failed job's rollback: each device's block of the plan's rollback, best effort, skipping a
 * device already as it was and one with a write stuck in the kernel, then the comparison with what
 * every device had before, which decides between rolled_back and failed.
 */
import type { RebindPlan } from '@vfio-fleet/core';
import type { Logger } from '../logger';
import type { DeviceBinding, JobOutcome } from './job-store';
import {
  describeFailure,
  differences,
  type Failure,
  type JobStepEvent,
  type StepRunner,
  settle,
} from './step-runner';
import { STUCK_IN_KERNEL, stuckReason } from './stuck-outcome';

export interface RollbackContext {
  steps: StepRunner;
  jobId: string;
  plan: RebindPlan;
  before: DeviceBinding[];
  failure: Failure;
  /** The forward write that timed out and may still be running in the kernel. */
  abandoned: Promise<void> | null;
  onStep: (e: JobStepEvent) => void;
  log: Logger;
  /** The job's outcome with nothing filled in yet. */
  outcome: (status: JobOutcome['status']) => JobOutcome;
  now: () => string;
}

export async function rollBack(ctx: RollbackContext): Promise<JobOutcome> {
  const { steps, jobId, plan, before, abandoned, onStep, log } = ctx;
  let failure = ctx.failure;
  // Info, not warn: the outcome carries the failure to whoever asked, and the CLI (logging at
  // warn) already prints it; a rollback that does not complete is logged as an error below.
  log.info({ code: failure.code, error: failure.error }, 'job failed: rolling back');
  if (abandoned !== null) {
    // A timed-out write still holds the device (the kernel's device lock during a slow probe):
    // every rollback write to it would queue behind it and time out too. Give it one more step
    // timeout to finish; the rollback then starts from whatever it left.
    await settle(abandoned, steps.stepTimeoutMs());
  }
  // A write past its deadline may be a slow probe that finishes: like a timed-out one above, it
  // gets one more step timeout. A device still stuck after that is not touched: every write and
  // lock-taking read of it would block behind that write.
  const addresses = before.map((b) => b.address);
  await steps.waitForStuck(addresses, steps.stepTimeoutMs());
  const stuck = addresses.flatMap((a) => steps.stuck(a) ?? []);
  if (stuck.length === 0 && failure.code === STUCK_IN_KERNEL) {
    // It returned: an ordinary timeout, and the rollback below covers the device again.
    failure = { ...failure, code: 'step-timeout' };
  }
  let blockAddress: string | null = null;
  let skipBlock = false;
  for (const [index, step] of plan.rollback.entries()) {
    const address = 'address' in step ? step.address : null;
    if (address !== null && stuck.some((w) => w.address === address)) {
      steps.report(onStep, steps.skippedEvent(jobId, index, step));
      continue;
    }
    if (address !== blockAddress) {
      // The rollback is one block per device. A device already as it was (never reached, or a
      // step that failed before changing it) is left alone: its block would unbind a working
      // host driver and bind it again, a needless outage that can itself fail.
      blockAddress = address;
      const prior = before.find((b) => b.address === address);
      const [now] = address === null ? [] : await steps.readBindings([address]);
      skipBlock =
        prior !== undefined && now !== undefined && differences([prior], [now]).length === 0;
    }
    if (skipBlock || (await steps.alreadyOnPrior(step, before))) {
      steps.report(onStep, steps.skippedEvent(jobId, index, step));
      continue;
    }
    // Best effort: a failing rollback step is reported and the next ones still run, since each
    // device's steps are independent and a partial rollback beats none.
    await steps.runStep(jobId, 'rollback', index, step, onStep);
  }
  const after = await steps.readBindings(before.map((b) => b.address));
  if (stuck.length > 0) {
    return {
      ...ctx.outcome('failed'),
      reason: stuckReason(stuck, before, after),
      failedStep: failure.failedStep,
      kernelError: failure.error,
      before,
      after,
      finishedAt: ctx.now(),
    };
  }
  const left = differences(before, after);
  const what = describeFailure(failure);
  if (left.length === 0) {
    return {
      ...ctx.outcome('rolled_back'),
      reason: {
        code: failure.code,
        message: `${what}; rolled back, every device is as before`,
        reasons: [],
      },
      failedStep: failure.failedStep,
      kernelError: failure.error,
      before,
      after,
      finishedAt: ctx.now(),
    };
  }
  log.error({ left }, 'rollback incomplete');
  return {
    ...ctx.outcome('failed'),
    reason: {
      code: 'rollback-incomplete',
      message: `${what}; rollback incomplete: ${left.join('; ')}`,
      reasons: [],
    },
    failedStep: failure.failedStep,
    kernelError: failure.error,
    before,
    after,
    finishedAt: ctx.now(),
  };
}
