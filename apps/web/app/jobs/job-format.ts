/**
 * What the jobs pages know about job states and the JSON a job carries (the agent's job-result,
 * the step events), parsed leniently with zod: a field the page cannot read is shown as missing,
 * never breaks the page.
 */
import { z } from 'zod';

/** In lifecycle order (the server's JOB_STATES; server code is not imported into the browser). */
export const JOB_STATES = [
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'rolled_back',
  'cancelled',
  'expired',
] as const;
export type JobStateName = (typeof JOB_STATES)[number];
export const ACTIVE_STATES: readonly JobStateName[] = ['queued', 'dispatched', 'running'];

export function isActiveState(state: string): boolean {
  return (ACTIVE_STATES as readonly string[]).includes(state);
}

const kernelErrorSchema = z.object({ errno: z.string(), message: z.string() });
export type KernelErrorView = z.infer<typeof kernelErrorSchema>;

const stepSchema = z
  .object({
    action: z.string(),
    address: z.string().optional(),
    path: z.string().optional(),
    value: z.string().optional(),
    module: z.string().optional(),
    description: z.string().optional(),
  })
  .loose();
export type StepView = z.infer<typeof stepSchema>;

const driverStateSchema = z.object({
  address: z.string(),
  driver: z.string().nullable(),
  driverOverride: z.string().nullable(),
});
export type DriverState = z.infer<typeof driverStateSchema>;

const keptBindingSchema = z.object({ address: z.string(), driver: z.string() });
/** What the job changed in the agent's bindings.json; absent from older agents. */
const persistenceSchema = z.object({
  kept: z.array(keptBindingSchema).catch([]),
  forgotten: z.array(keptBindingSchema).catch([]),
  error: z.string().nullable().catch(null),
});
export type PersistenceView = z.infer<typeof persistenceSchema>;

const resultSchema = z.object({
  status: z.string(),
  reason: z.object({ code: z.string(), message: z.string() }).nullable().catch(null),
  failedStep: z
    .object({ phase: z.string(), index: z.number(), step: stepSchema })
    .nullable()
    .catch(null),
  kernelError: kernelErrorSchema.nullable().catch(null),
  before: z.array(driverStateSchema).catch([]),
  after: z.array(driverStateSchema).catch([]),
  persistence: persistenceSchema.nullable().catch(null),
});
export type ResultView = z.infer<typeof resultSchema>;

export function parseResult(value: unknown): ResultView | null {
  const parsed = resultSchema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/** The data of a job-step event, as the dispatcher records it. */
const stepEventSchema = z.object({
  phase: z.string(),
  index: z.number(),
  action: z.string(),
  address: z.string().nullable().catch(null),
  path: z.string().nullable().catch(null),
  value: z.string().nullable().catch(null),
  status: z.string(),
  durationMs: z.number().nullable().catch(null),
  error: kernelErrorSchema.nullable().catch(null),
  step: stepSchema.optional().catch(undefined),
});
export type StepEventView = z.infer<typeof stepEventSchema>;

export function parseStepEvent(value: unknown): StepEventView | null {
  const parsed = stepEventSchema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

export function stepPath(step: StepView): string {
  return step.path ?? (step.module === undefined ? '' : `modprobe ${step.module}`);
}

export function shortId(id: string): string {
  return id.slice(0, 8);
}
