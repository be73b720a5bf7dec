/**
 * What the API shows of a job and its events: plain JSON (ISO timestamps, no Date objects), the
 * host's name and the creator's username joined in, so a list needs no second round trip.
 */
import {
  type Database,
  hosts,
  type JobEventRow,
  type JobRow,
  type JobState,
  type JobTarget,
  jobs,
  users,
} from '@vfio-fleet/db';
import { eq } from 'drizzle-orm';

export interface JobView {
  id: string;
  hostId: string;
  hostname: string;
  iommuGroup: number;
  address: string;
  target: JobTarget;
  force: boolean;
  /** A move to vfio the agent keeps across reboots. */
  persist: boolean;
  state: JobState;
  createdAt: string;
  /** The user's id; null when the user was deleted since (or the job came from no user). */
  createdBy: string | null;
  createdByName: string | null;
  deadline: string;
  dispatchedAt: string | null;
  acceptedAt: string | null;
  finishedAt: string | null;
  attempt: number;
  reasonCode: string | null;
  reasonMessage: string | null;
  canaryOf: string | null;
  bulkId: string | null;
  cancelRequested: boolean;
  cancelRequestedAt: string | null;
  previewHash: string | null;
  /** The JobPreview the operator acknowledged (plan, blast radius, warnings). */
  preview: unknown;
  /** The agent's job-result, once there is one. */
  result: unknown;
}

export interface JobEventView {
  id: number;
  at: string;
  fromState: string | null;
  toState: string;
  message: string | null;
  data: unknown;
}

/** A job row with what the view joins in. */
export interface JobWithNames {
  job: JobRow;
  hostname: string;
  createdByName: string | null;
}

/** SELECT jobs + hostname + creator's username; add .where/.orderBy/.limit. */
export function selectJobsWithNames(db: Database) {
  return db
    .select({ job: jobs, hostname: hosts.hostname, createdByName: users.username })
    .from(jobs)
    .innerJoin(hosts, eq(hosts.id, jobs.hostId))
    .leftJoin(users, eq(users.id, jobs.createdBy));
}

function iso(date: Date | null): string | null {
  return date === null ? null : date.toISOString();
}

export function toJobView({ job, hostname, createdByName }: JobWithNames): JobView {
  return {
    id: job.id,
    hostId: job.hostId,
    hostname,
    iommuGroup: job.iommuGroup,
    address: job.address,
    target: job.target,
    force: job.force,
    persist: job.persist,
    state: job.state,
    createdAt: job.createdAt.toISOString(),
    createdBy: job.createdBy,
    createdByName,
    deadline: job.deadline.toISOString(),
    dispatchedAt: iso(job.dispatchedAt),
    acceptedAt: iso(job.acceptedAt),
    finishedAt: iso(job.finishedAt),
    attempt: job.attempt,
    reasonCode: job.reasonCode,
    reasonMessage: job.reasonMessage,
    canaryOf: job.canaryOf,
    bulkId: job.bulkId,
    cancelRequested: job.cancelRequestedAt !== null,
    cancelRequestedAt: iso(job.cancelRequestedAt),
    previewHash: job.previewHash,
    preview: job.preview,
    result: job.result,
  };
}

export function toJobEventView(row: JobEventRow): JobEventView {
  return {
    id: row.id,
    at: row.at.toISOString(),
    fromState: row.fromState,
    toState: row.toState,
    message: row.message,
    data: row.data,
  };
}
