/**
 * The rules every job creation (one job or a bulk) applies before it writes: an acknowledged
 * preview, a deadline within bounds, a plan that can run (force only past warnings, as the agent
 * decides), and the database's one-active-job-per-group index turned into a clear conflict.
 */
import { isUniqueViolation, type UserRole } from '@vfio-fleet/db';
import { ServerError } from '../errors';
import type { JobPreview } from './job-preview';

export interface Actor {
  userId: string | null;
  username: string;
  role: UserRole;
}

export const DEFAULT_DEADLINE_SECONDS = 15 * 60;
export const MIN_DEADLINE_SECONDS = 30;
export const MAX_DEADLINE_SECONDS = 86_400;
export const MAX_JOB_PAGE = 200;

export function deadlineFrom(deadlineSeconds: number | undefined, now = new Date()): Date {
  const seconds = deadlineSeconds ?? DEFAULT_DEADLINE_SECONDS;
  if (
    !Number.isInteger(seconds) ||
    seconds < MIN_DEADLINE_SECONDS ||
    seconds > MAX_DEADLINE_SECONDS
  ) {
    throw new ServerError(
      'bad-request',
      `deadlineSeconds must be an integer from ${MIN_DEADLINE_SECONDS} to ${MAX_DEADLINE_SECONDS}`,
    );
  }
  return new Date(now.getTime() + seconds * 1000);
}

/** The router's zod has `z.literal(true)`; this is for callers that bypass it. */
export function requireAcknowledged(acknowledge: unknown): void {
  if (acknowledge !== true) {
    throw new ServerError(
      'bad-request',
      'the preview must be acknowledged (acknowledge: true) before a job is created',
    );
  }
}

/** How an agent is told to run jobs: the dashboard and every refusal say the same. */
export const ALLOW_REBIND_HINT = 'restart its agent with --allow-rebind to allow rebinding';

/**
 * Why no job may be queued for a host whose agent said at hello it runs none (or, older, said
 * nothing): the agent would refuse it anyway, so the refusal comes now, with the way out.
 */
export function readOnlyProblem(hostname: string, allowRebind: boolean | null): string | null {
  if (allowRebind === true) return null;
  const why =
    allowRebind === false
      ? 'its agent runs without --allow-rebind'
      : 'its agent has not said it may rebind (an older agent, or none connected since this server was upgraded)';
  return `read-only: ${hostname} is read-only (${why}), so no job is queued for it: ${ALLOW_REBIND_HINT}`;
}

/** `persist` keeps a move to vfio; a restore always forgets, so asking it to keep is a mistake. */
export function requirePersistTarget(target: 'vfio' | 'host', persist: boolean): void {
  if (persist && target === 'host') {
    throw new ServerError(
      'bad-request',
      'persist is for moves to vfio: a restore always forgets the binding it gives back',
    );
  }
}

/**
 * Why a preview cannot become a job, as the conflict the API returns; null when it can.
 * `force` lets warnings through (the agent's rule), never a refusal. A group already on vfio
 * takes a job only to keep it across reboots (`persist`): the agent then writes only its record.
 */
export function previewProblem(
  preview: JobPreview,
  force: boolean,
  persist = false,
): string | null {
  const readOnly = readOnlyProblem(preview.hostname, preview.hostAllowsRebind);
  if (readOnly !== null) return readOnly;
  if (preview.refusal !== null) return `${preview.refusal.code}: ${preview.refusal.message}`;
  if (preview.plan === null) return 'no plan';
  if (preview.plan.alreadyDone && !(persist && preview.target === 'vfio')) {
    return `nothing-to-do: IOMMU group ${preview.iommuGroup ?? '-'} of ${preview.address} is already on its vfio drivers`;
  }
  if (preview.iommuGroup === null) {
    return `no-iommu-group: ${preview.address} has no IOMMU group, so no job can hold it`;
  }
  if (preview.needsForce.length > 0 && !force) {
    return `needs-force: moving ${preview.address} to ${preview.target} needs force (${preview.needsForce.join(', ')})`;
  }
  return null;
}

export function groupBusy(iommuGroup: number, hostname: string, jobId: string | null): ServerError {
  return new ServerError(
    'conflict',
    jobId === null
      ? `IOMMU group ${iommuGroup} on ${hostname} already has an active job`
      : `IOMMU group ${iommuGroup} on ${hostname} already has an active job ${jobId}`,
  );
}

/** The partial unique index refused an insert: another active job holds the group. */
export function isActiveGroupViolation(error: unknown): boolean {
  return isUniqueViolation(error, 'jobs_one_active_per_group_idx');
}
