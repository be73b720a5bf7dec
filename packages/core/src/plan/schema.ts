/**
 * A rebind plan: the exact sysfs writes that move a device's IOMMU group to vfio or back to its
 * host drivers, the writes that undo them, and what the host loses on the way.
 *
 * Plans go on the wire (server to agent), and an agent writes to the paths they name as root, so
 * the schema is the agent's last line of defence: every string and array is bounded, every path
 * must be exactly the one its action and address call for, and modprobe only loads vfio modules
 * in a plan to vfio (a restore loads the host driver's module, as udev would have at boot).
 * Nothing in a plan ever names `new_id`: a dynamic id makes the driver grab every matching device,
 * including a hot-plugged twin of the one being passed through; driver_override is per device.
 */
import { z } from 'zod';
import {
  kernelNameSchema,
  pciAddressSchema,
  readinessReasonSchema,
  severitySchema,
} from '../inventory/schema';
import { isVfioDriverName } from '../vfio/select-variant';

/** Bounds for wire data: generous for any real host, small enough that a bad peer cannot balloon memory. */
const MAX_TEXT = 2000;
const MAX_DEVICES = 256;
const MAX_STEPS = 4096;
const MAX_REASONS = 256;

export const DRIVERS_PROBE_PATH = '/sys/bus/pci/drivers_probe';
/** The value written to driver_override to clear it (the kernel strips the newline, leaving it empty). */
export const CLEAR_OVERRIDE_VALUE = '\n';

export function driverOverridePath(address: string): string {
  return `/sys/bus/pci/devices/${address}/driver_override`;
}
export function driverUnbindPath(driver: string): string {
  return `/sys/bus/pci/drivers/${driver}/unbind`;
}
export function driverBindPath(driver: string): string {
  return `/sys/bus/pci/drivers/${driver}/bind`;
}
/** Through the device's own `driver` link: unbinds whatever it is bound to when the step runs. */
export function currentDriverUnbindPath(address: string): string {
  return `/sys/bus/pci/devices/${address}/driver/unbind`;
}

export const rebindTargetSchema = z.enum(['vfio', 'host']);
export type RebindTarget = z.infer<typeof rebindTargetSchema>;

const descriptionSchema = z.string().min(1).max(MAX_TEXT);
const pathSchema = z.string().min(1).max(256);

/**
 * Whatever driver_override can hold and the plan may write back: no newline (the kernel keeps only
 * what precedes one, so a restore would not round-trip) and no NUL. The kernel caps it at a page.
 */
export const overrideValueSchema = z
  .string()
  .min(1)
  .max(4095)
  .regex(/^[^\n\0]+$/, 'expected a driver_override value without newlines');

/** A network interface name as the kernel allows it (dev_valid_name: IFNAMSIZ-1, no `/`, `:` or blanks). */
const netInterfaceSchema = z.string().regex(/^[^/:\s]{1,15}$/, 'expected a network interface name');

/** modprobe runs as root on the agent: only vfio modules (vfio_pci and its `*_vfio_pci` variants) are plannable. */
const vfioModuleSchema = kernelNameSchema.refine(
  (module) => module === 'vfio_pci' || isVfioDriverName(module),
  'expected a vfio module (vfio_pci or a *_vfio_pci variant driver)',
);
const vfioDriverSchema = kernelNameSchema.refine(
  isVfioDriverName,
  'expected a vfio PCI driver name (vfio-pci or a *_vfio_pci variant)',
);

/** readinessReasonSchema with the bounds a wire format needs. */
export const planReasonSchema = readinessReasonSchema.extend({
  code: z
    .string()
    .max(64)
    .regex(/^[a-z0-9-]+$/),
  severity: severitySchema,
  message: z.string().max(MAX_TEXT),
  remedy: z.string().max(MAX_TEXT).nullable(),
  related: z.array(pciAddressSchema).max(MAX_DEVICES),
});

export const verifyExpectationSchema = z.discriminatedUnion('kind', [
  /** Bound to exactly this driver. */
  z.object({ kind: z.literal('driver'), driver: kernelNameSchema }),
  /** Bound to nothing (a rollback to a device that had no driver). */
  z.object({ kind: z.literal('none') }),
  /** Not on any vfio driver: back on a host driver, or unbound when no host driver claims it. */
  z.object({ kind: z.literal('not-vfio') }),
]);
export type VerifyExpectation = z.infer<typeof verifyExpectationSchema>;

const modprobeStepSchema = z.object({
  action: z.literal('modprobe'),
  /** Which modules a plan may load depends on its direction: see rebindPlanSchema. */
  module: kernelNameSchema,
  description: descriptionSchema,
});
const setOverrideStepSchema = z.object({
  action: z.literal('set-override'),
  address: pciAddressSchema,
  path: pathSchema,
  value: vfioDriverSchema,
  description: descriptionSchema,
});
const clearOverrideStepSchema = z.object({
  action: z.literal('clear-override'),
  address: pciAddressSchema,
  path: pathSchema,
  value: z.literal(CLEAR_OVERRIDE_VALUE),
  description: descriptionSchema,
});
const unbindStepSchema = z.object({
  action: z.literal('unbind'),
  address: pciAddressSchema,
  driver: kernelNameSchema,
  path: pathSchema,
  value: pciAddressSchema,
  description: descriptionSchema,
});
const unbindCurrentStepSchema = z.object({
  action: z.literal('unbind-current'),
  address: pciAddressSchema,
  path: pathSchema,
  value: pciAddressSchema,
  description: descriptionSchema,
});
const probeStepSchema = z.object({
  action: z.literal('probe'),
  address: pciAddressSchema,
  path: z.literal(DRIVERS_PROBE_PATH),
  value: pciAddressSchema,
  description: descriptionSchema,
});
const bindStepSchema = z.object({
  action: z.literal('bind'),
  address: pciAddressSchema,
  driver: kernelNameSchema,
  path: pathSchema,
  value: pciAddressSchema,
  description: descriptionSchema,
});
const restoreOverrideStepSchema = z.object({
  action: z.literal('restore-override'),
  address: pciAddressSchema,
  path: pathSchema,
  value: z.union([z.literal(CLEAR_OVERRIDE_VALUE), overrideValueSchema]),
  description: descriptionSchema,
});
const verifyDriverStepSchema = z.object({
  action: z.literal('verify-driver'),
  address: pciAddressSchema,
  expect: verifyExpectationSchema,
  description: descriptionSchema,
});

const planStepUnionSchema = z.discriminatedUnion('action', [
  modprobeStepSchema,
  setOverrideStepSchema,
  clearOverrideStepSchema,
  unbindStepSchema,
  unbindCurrentStepSchema,
  probeStepSchema,
  bindStepSchema,
  restoreOverrideStepSchema,
  verifyDriverStepSchema,
]);
export type PlanStep = z.infer<typeof planStepUnionSchema>;

/** The one path each action may write for its address/driver; anything else is rejected. */
function expectedPath(step: PlanStep): string | null {
  switch (step.action) {
    case 'set-override':
    case 'clear-override':
    case 'restore-override':
      return driverOverridePath(step.address);
    case 'unbind':
      return driverUnbindPath(step.driver);
    case 'unbind-current':
      return currentDriverUnbindPath(step.address);
    case 'probe':
      return DRIVERS_PROBE_PATH;
    case 'bind':
      return driverBindPath(step.driver);
    case 'modprobe':
    case 'verify-driver':
      return null;
  }
}

/** The device files (unbind, bind, drivers_probe) take the address of the device to act on. */
const ADDRESS_VALUED: ReadonlySet<string> = new Set(['unbind', 'unbind-current', 'probe', 'bind']);

export const planStepSchema = planStepUnionSchema.superRefine((step, ctx) => {
  const path = expectedPath(step);
  if (path !== null && 'path' in step && step.path !== path) {
    ctx.addIssue({
      code: 'custom',
      path: ['path'],
      message: `a ${step.action} step for ${step.address} must write ${path}`,
    });
  }
  // Writing another device's address there would act on a device the plan does not describe.
  if (ADDRESS_VALUED.has(step.action) && 'value' in step && step.value !== step.address) {
    ctx.addIssue({
      code: 'custom',
      path: ['value'],
      message: `a ${step.action} step must write its own address ${step.address}`,
    });
  }
});
export type PlanAction = PlanStep['action'];

export const planPreconditionSchema = z.object({
  address: pciAddressSchema,
  driver: kernelNameSchema.nullable(),
  driverOverride: overrideValueSchema.nullable(),
});
export type PlanPrecondition = z.infer<typeof planPreconditionSchema>;

export const blastRadiusEntrySchema = z.object({
  address: pciAddressSchema,
  /** Driver it loses; null for a VF the snapshot does not describe. */
  driver: kernelNameSchema.nullable(),
  name: z.string().min(1).max(512),
  netInterfaces: z.array(netInterfaceSchema).max(64),
  reason: z.string().min(1).max(MAX_TEXT),
});
export type BlastRadiusEntry = z.infer<typeof blastRadiusEntrySchema>;

const rebindPlanObjectSchema = z.object({
  target: rebindTargetSchema,
  /** The device that was asked for, canonical. */
  address: pciAddressSchema,
  /** Null when the device has no IOMMU group (the plan then covers only that device). */
  iommuGroup: z.number().int().nonnegative().nullable(),
  /** Endpoints the steps act on, in step order. */
  devices: z.array(pciAddressSchema).max(MAX_DEVICES),
  /** The state the plan was computed from: the executor refuses to start if the host drifted. */
  preconditions: z.array(planPreconditionSchema).max(MAX_DEVICES),
  steps: z.array(planStepSchema).max(MAX_STEPS),
  /** Undoes any prefix of `steps`, returning every device to its precondition state. */
  rollback: z.array(planStepSchema).max(MAX_STEPS),
  /** Everything that loses its current driver, including VFs that vanish with their PF. */
  blastRadius: z.array(blastRadiusEntrySchema).max(MAX_DEVICES * 4),
  warnings: z.array(planReasonSchema).max(MAX_REASONS),
  /** The group is already where it should be: no steps. */
  alreadyDone: z.boolean(),
});
/**
 * A plan to vfio loads only vfio modules; a restore only host drivers' modules (never a vfio one:
 * it is giving devices back). The rollback loads nothing.
 */
export const rebindPlanSchema = rebindPlanObjectSchema.superRefine((plan, ctx) => {
  for (const [key, steps] of [
    ['steps', plan.steps],
    ['rollback', plan.rollback],
  ] as const) {
    for (const [index, step] of steps.entries()) {
      if (step.action !== 'modprobe') continue;
      const vfio = vfioModuleSchema.safeParse(step.module).success;
      if (key === 'steps' && vfio === (plan.target === 'vfio')) continue;
      ctx.addIssue({
        code: 'custom',
        path: [key, index, 'module'],
        message:
          key === 'rollback'
            ? 'a rollback loads no module'
            : plan.target === 'vfio'
              ? 'expected a vfio module (vfio_pci or a *_vfio_pci variant driver)'
              : 'a restore loads host drivers, never a vfio module',
      });
    }
  }
});
export type RebindPlan = z.infer<typeof rebindPlanSchema>;

export const planRefusalCodeSchema = z.enum([
  'unknown-device',
  'blocked',
  'not-endpoint',
  'no-vfio-driver',
  'nothing-to-do',
  /** A member of the group could not be read: the group is never planned in either direction. */
  'group-unreadable',
  /** The plan would unbind or remove a device a VM holds: never forceable. */
  'in-use',
]);
export type PlanRefusalCode = z.infer<typeof planRefusalCodeSchema>;

export const planRefusalSchema = z.object({
  code: planRefusalCodeSchema,
  message: z.string().min(1).max(MAX_TEXT),
  reasons: z.array(planReasonSchema).max(MAX_REASONS),
});
export type PlanRefusal = z.infer<typeof planRefusalSchema>;
