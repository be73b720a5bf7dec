/**
 * The end of a job that left a write stuck in the kernel: the device is neither read nor rolled
 * back (its lock is held by the blocked write), the others are rolled back as usual, and the
 * outcome says what is blocked and that the agent goes on working.
 */
import { describeStuckWrite, type StuckWrite } from '../kernel/stuck-writes';
import type { DeviceBinding, JobOutcome } from './job-store';
import { differences } from './step-runner';

export const STUCK_IN_KERNEL = 'stuck-in-kernel';

export function stuckReason(
  stuck: readonly StuckWrite[],
  before: readonly DeviceBinding[],
  after: readonly DeviceBinding[],
): NonNullable<JobOutcome['reason']> {
  const blocked = stuck.map(
    (w) =>
      `${describeStuckWrite(w)} is stuck in the kernel (the device is likely held, e.g. by a VM): the agent will not read or write ${w.address ?? 'that device'} until it returns, and reports it then`,
  );
  const others = before.filter((b) => !stuck.some((w) => w.address === b.address));
  const left = differences(others, after);
  const rest =
    others.length === 0
      ? ''
      : left.length === 0
        ? '; the group’s other devices are as before'
        : `; rollback incomplete: ${left.join('; ')}`;
  return {
    code: STUCK_IN_KERNEL,
    message: `${blocked.join('; ')}${rest}. The agent keeps working: other devices, groups and scans are unaffected`,
    reasons: [],
  };
}
