/**
 * Jobs: thin — validate, call the job service with the acting user, and let the dispatcher know
 * (after the service committed) that a host has work or a job should be cancelled.
 */
import { JOB_STATES } from '@vfio-fleet/db';
import { z } from 'zod';
import {
  cancelJob,
  createBulk,
  createJob,
  getJob,
  listJobs,
  previewBulk,
  previewJob,
} from '../../jobs/job-service';
import { actorOf } from '../actor';
import {
  cursorInput,
  hex4Input,
  labelsInput,
  limitInput,
  pciAddressInput,
  targetInput,
  uuidInput,
} from '../inputs';
import { type ApiContext, createRouter, operatorProcedure, viewerProcedure } from '../trpc';

const previewInput = z.object({
  hostId: uuidInput,
  address: pciAddressInput,
  target: targetInput,
});

const commitInput = {
  force: z.boolean().optional(),
  /** Keep a move to vfio across reboots; refused with a restore (which always forgets). */
  persist: z.boolean().optional(),
  /** The caller saw the preview (steps, blast radius, warnings) and accepts it. */
  acknowledge: z.literal(true),
  previewHash: z.string().min(1).max(200),
  deadlineSeconds: z.number().int().min(30).max(86_400).optional(),
};

const bulkInput = z.object({
  vendorId: hex4Input,
  deviceId: hex4Input,
  labels: labelsInput,
  hostIds: z.array(uuidInput).max(10_000).optional(),
  target: targetInput,
});

function wakeOf(ctx: ApiContext): ((hostId: string) => void) | undefined {
  const { dispatcher } = ctx;
  return dispatcher === null ? undefined : (hostId) => dispatcher.wake(hostId);
}

export const jobsRouter = createRouter({
  preview: operatorProcedure
    .input(previewInput)
    .query(({ ctx, input }) => previewJob(ctx.db, input)),

  create: operatorProcedure
    .input(previewInput.extend(commitInput))
    .mutation(({ ctx, input }) => createJob(ctx.db, actorOf(ctx.user), input, wakeOf(ctx))),

  previewBulk: operatorProcedure
    .input(bulkInput)
    .query(({ ctx, input }) => previewBulk(ctx.db, input)),

  createBulk: operatorProcedure
    .input(bulkInput.extend({ ...commitInput, canary: z.boolean().default(true) }))
    .mutation(({ ctx, input }) => createBulk(ctx.db, actorOf(ctx.user), input, wakeOf(ctx))),

  list: viewerProcedure
    .input(
      z
        .object({
          state: z.array(z.enum(JOB_STATES)).max(JOB_STATES.length).optional(),
          hostId: uuidInput.optional(),
          bulkId: uuidInput.optional(),
          limit: limitInput,
          cursor: cursorInput,
        })
        .default({ limit: 50 }),
    )
    .query(({ ctx, input }) => listJobs(ctx.db, input)),

  get: viewerProcedure
    .input(z.object({ jobId: uuidInput }))
    .query(({ ctx, input }) => getJob(ctx.db, input.jobId)),

  cancel: operatorProcedure.input(z.object({ jobId: uuidInput })).mutation(({ ctx, input }) => {
    const { dispatcher } = ctx;
    return cancelJob(
      ctx.db,
      actorOf(ctx.user),
      input.jobId,
      dispatcher === null ? undefined : (job) => dispatcher.requestCancel(job),
    );
  }),
});
