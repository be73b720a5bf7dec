/**
 * One step of a rebind plan at a time, for the executor: the write or modprobe under a timeout,
 * verify's polling, the /dev/vfio check, and the reads of driver and driver_override that every
 * outcome compares before and after. The executor decides what runs and what the outcome says.
 */
import {
  isVfioDriverName,
  type KernelIo,
  KernelIoError,
  type PlanStep,
  type RebindPlan,
  type VerifyExpectation,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { linkBasename } from '../inventory/sysfs-values';
import { type StuckWrite, stuckWrites } from '../kernel/stuck-writes';
import { hasWriteDeadline } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';
import { heldBeforeUnbind } from './held-since-plan';
import type { DeviceBinding, JobOutcome, JobPhase, KernelErrorInfo } from './job-store';

/** How long a verify waits for a driver that probes asynchronously before it calls it wrong. */
const VERIFY_SETTLE_MS = 500;
/** /dev/vfio/<group> appears through devtmpfs once the group's first device binds to vfio. */
const DEV_NODE_SETTLE_MS = 2000;
const POLL_MS = 25;
/**
 * A KernelIo that enforces the step's deadline itself (SysfsKernelIo) must be the one to call a
 * write stuck, so its verdict comes first: this outer bound only covers its writer's start.
 */
const WRITER_GRACE_MS = 5000;

const PCI_DEVICES = '/sys/bus/pci/devices';

export interface JobStepEvent {
  jobId: string;
  phase: JobPhase;
  index: number;
  step: PlanStep;
  status: 'ok' | 'failed' | 'skipped';
  startedAt: string;
  durationMs: number;
  error: KernelErrorInfo | null;
}

/** Why a job's forward steps stopped: the step (null after the last) and the kernel's error. */
export interface Failure {
  failedStep: JobOutcome['failedStep'];
  error: KernelErrorInfo;
  code: string;
}

export interface StepRunnerDeps {
  fs: HostFs;
  io: KernelIo;
  /** Per step; a write still pending after it counts as failed with ETIMEDOUT. */
  stepTimeoutMs: number;
  logger: Logger;
  now: () => Date;
}

/** A verify step that found the wrong driver; `EVERIFY` keeps the errno field's shape. */
class VerifyError extends Error {
  readonly errno = 'EVERIFY';
}

class StepTimeoutError extends Error {
  readonly errno = 'ETIMEDOUT';
}

/** A device a user took since the job began; `EINUSE` keeps the errno field's shape. */
export class InUseError extends Error {
  readonly errno = 'EINUSE';
}

export class StepRunner {
  constructor(private readonly deps: StepRunnerDeps) {}

  async runStep(
    jobId: string,
    phase: JobPhase,
    index: number,
    step: PlanStep,
    onStep: (e: JobStepEvent) => void,
  ): Promise<{ event: JobStepEvent; pending: Promise<void> | null }> {
    const startedAt = this.deps.now().toISOString();
    const t0 = performance.now();
    let status: JobStepEvent['status'] = 'ok';
    let error: KernelErrorInfo | null = null;
    let pending: Promise<void> | null = null;
    try {
      const driver =
        step.action === 'unbind-current' || step.action === 'unbind'
          ? await this.currentDriver(step.address)
          : null;
      if (step.action === 'unbind-current' && driver === null) {
        // Writing to a `driver/unbind` that does not exist fails; nothing is bound, nothing to do.
        status = 'skipped';
      } else {
        // A user may have opened the device (or a VF of it) since the job's last look: unbinding
        // it would block.
        if (driver !== null && 'address' in step) {
          const held = await heldBeforeUnbind(this.deps.fs, step.address);
          if (held !== null) throw new InUseError(held);
        }
        const work = this.perform(step);
        pending = work;
        const bound =
          hasWriteDeadline(this.deps.io) && step.action !== 'modprobe'
            ? this.stepTimeoutMs() + WRITER_GRACE_MS
            : this.stepTimeoutMs();
        await withTimeout(work, bound, describeStep(step));
        pending = null;
      }
    } catch (caught) {
      status = 'failed';
      error = toKernelError(caught);
      if (!(caught instanceof StepTimeoutError)) pending = null;
    }
    const event: JobStepEvent = {
      jobId,
      phase,
      index,
      step,
      status,
      startedAt,
      durationMs: Math.round((performance.now() - t0) * 1000) / 1000,
      error,
    };
    this.report(onStep, event);
    return { event, pending };
  }

  /**
   * A rollback unbind or bind of a device already on the driver it had: skipped. Re-read after the
   * override restore, since a forward unbind that failed (EBUSY) left the device on its host
   * driver; unbinding it there would take that driver away, and the bind back can fail.
   */
  async alreadyOnPrior(step: PlanStep, before: readonly DeviceBinding[]): Promise<boolean> {
    if (step.action !== 'unbind-current' && step.action !== 'bind') return false;
    const prior = before.find((b) => b.address === step.address);
    return prior !== undefined && (await this.currentDriver(step.address)) === prior.driver;
  }

  skippedEvent(jobId: string, index: number, step: PlanStep): JobStepEvent {
    return {
      jobId,
      phase: 'rollback',
      index,
      step,
      status: 'skipped',
      startedAt: this.deps.now().toISOString(),
      durationMs: 0,
      error: null,
    };
  }

  report(onStep: (e: JobStepEvent) => void, event: JobStepEvent): void {
    const { jobId, phase, index, status, error } = event;
    this.deps.logger.debug(
      { jobId, phase, index, action: event.step.action, status, error },
      'step',
    );
    try {
      onStep(event);
    } catch (listenerError) {
      // A reporting failure (a closed socket) must not abort a job half-way through its writes.
      this.deps.logger.warn({ err: listenerError }, 'step listener threw');
    }
  }

  stepTimeoutMs(): number {
    return this.deps.stepTimeoutMs;
  }

  private async perform(step: PlanStep): Promise<void> {
    switch (step.action) {
      case 'modprobe':
        return this.deps.io.modprobe(step.module);
      case 'verify-driver':
        return this.verify(step.address, step.expect);
      case 'set-override':
      case 'clear-override':
      case 'restore-override':
      case 'unbind':
      case 'unbind-current':
      case 'probe':
      case 'bind': {
        const io = this.deps.io;
        return hasWriteDeadline(io)
          ? io.writeWithin(step.path, step.value, this.stepTimeoutMs())
          : io.write(step.path, step.value);
      }
    }
  }

  /** The write stuck in the kernel on `address`, if any: such a device is neither read nor written. */
  stuck(address: string): StuckWrite | null {
    return stuckWrites.forDevice(this.deps.fs.root, address);
  }

  /** Gives stuck writes on `addresses` up to `ms` to return (a slow probe, not a held device). */
  waitForStuck(addresses: readonly string[], ms: number): Promise<void> {
    return stuckWrites.waitForClear(this.deps.fs.root, addresses, ms);
  }

  private async verify(address: string, expect: VerifyExpectation): Promise<void> {
    const deadline = Date.now() + Math.min(VERIFY_SETTLE_MS, this.stepTimeoutMs());
    for (;;) {
      const driver = await this.currentDriver(address);
      if (matches(driver, expect)) return;
      if (Date.now() >= deadline) {
        const now = driver === null ? 'bound to no driver' : `bound to ${driver}`;
        throw new VerifyError(`${address} is ${now}, expected ${describeExpectation(expect)}`);
      }
      await sleep(POLL_MS);
    }
  }

  /** For a group moved to vfio, the group's device node is what a VM opens: it must exist. */
  async checkDevNode(plan: RebindPlan): Promise<Failure | null> {
    if (plan.target !== 'vfio' || plan.iommuGroup === null) return null;
    const node = `/dev/vfio/${plan.iommuGroup}`;
    const deadline = Date.now() + Math.min(DEV_NODE_SETTLE_MS, this.stepTimeoutMs());
    for (;;) {
      if (await this.deps.fs.exists(node)) return null;
      if (Date.now() >= deadline) break;
      await sleep(POLL_MS);
    }
    return {
      failedStep: null,
      code: 'vfio-node-missing',
      error: {
        errno: 'ENOENT',
        message: `${node} did not appear after every device of IOMMU group ${plan.iommuGroup} was bound to vfio (is the group viable?)`,
      },
    };
  }

  async currentDriver(address: string): Promise<string | null> {
    return linkBasename(await this.deps.fs.readLink(`${PCI_DEVICES}/${address}/driver`));
  }

  /** Each device's binding; a device stuck in the kernel is unknown and left out, not read. */
  async readBindings(addresses: readonly string[]): Promise<DeviceBinding[]> {
    const result: DeviceBinding[] = [];
    for (const address of addresses) {
      if (this.stuck(address) !== null) continue;
      const override = await this.deps.fs.readAttr(`${PCI_DEVICES}/${address}/driver_override`);
      result.push({
        address,
        driver: await this.currentDriver(address),
        // The kernel prints `(null)` for an unset override.
        driverOverride:
          override === null || override === '' || override === '(null)' ? null : override,
      });
    }
    return result;
  }
}

function matches(driver: string | null, expect: VerifyExpectation): boolean {
  switch (expect.kind) {
    case 'driver':
      return driver === expect.driver;
    case 'none':
      return driver === null;
    case 'not-vfio':
      return driver === null || !isVfioDriverName(driver);
  }
}

function describeExpectation(expect: VerifyExpectation): string {
  switch (expect.kind) {
    case 'driver':
      return expect.driver;
    case 'none':
      return 'no driver';
    case 'not-vfio':
      return 'a non-vfio driver or none';
  }
}

/** `a: driver x (was y)` for every device whose driver or driver_override differs. */
export function differences(
  expected: readonly DeviceBinding[],
  actual: readonly DeviceBinding[],
): string[] {
  const out: string[] = [];
  for (const want of expected) {
    const got = actual.find((a) => a.address === want.address);
    if (got === undefined) {
      out.push(`${want.address}: gone`);
      continue;
    }
    const parts: string[] = [];
    if (got.driver !== want.driver) {
      parts.push(`driver ${got.driver ?? 'none'} (was ${want.driver ?? 'none'})`);
    }
    if (got.driverOverride !== want.driverOverride) {
      parts.push(
        `driver_override ${got.driverOverride ?? 'unset'} (was ${want.driverOverride ?? 'unset'})`,
      );
    }
    if (parts.length > 0) out.push(`${want.address}: ${parts.join(', ')}`);
  }
  return out;
}

function describeStep(step: PlanStep): string {
  if (step.action === 'modprobe') return `modprobe ${step.module}`;
  if (step.action === 'verify-driver') return `verify ${step.address}`;
  return `write ${JSON.stringify(step.value)} to ${step.path}`;
}

export function describeFailure(failure: Failure): string {
  const where =
    failure.failedStep === null
      ? 'after the last step'
      : `step ${failure.failedStep.index + 1} (${describeStep(failure.failedStep.step)})`;
  return `${where} failed: ${failure.error.errno}: ${failure.error.message}`;
}

function toKernelError(error: unknown): KernelErrorInfo {
  if (error instanceof KernelIoError) return { errno: error.errno, message: error.message };
  if (
    error instanceof VerifyError ||
    error instanceof StepTimeoutError ||
    error instanceof InUseError
  ) {
    return { errno: error.errno, message: error.message };
  }
  const code =
    error instanceof Error && 'code' in error && typeof error.code === 'string' ? error.code : null;
  return {
    errno: code !== null && /^E[A-Z0-9]+$/.test(code) ? code : 'EUNKNOWN',
    message: errorMessage(error),
  };
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Races the step against a timer. The kernel write cannot be cancelled: a hung probe may still
 * finish later, which is why the rollback re-reads and compares every device afterwards.
 */
async function withTimeout(work: Promise<void>, ms: number, what: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new StepTimeoutError(`${what} did not finish within ${ms} ms`)),
      ms,
    );
  });
  // A late rejection of the abandoned write must not become an unhandled rejection.
  work.catch(() => undefined);
  try {
    await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for `work` to finish, either way, or for `ms`. */
export async function settle(work: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([work.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
