/**
 * Plans moving a device to vfio, or back to the host, from one host snapshot. Pure: it computes
 * the sysfs writes, their rollback and the blast radius; an agent executes them.
 *
 * The unit is the IOMMU group, not the device: vfio hands a VM a whole group, so every endpoint in
 * it moves together. Bridges stay on pcieport (vfio does not need them and they carry the link).
 * Binding uses driver_override + drivers_probe, never `new_id`: a dynamic id would make the vfio
 * driver grab every device with that vendor:device, including a hot-plugged twin the host needs.
 */

import { ParseError } from '../errors';
import type { Device, HostSnapshot, ReadinessReason } from '../inventory/schema';
import { comparePciAddresses, normalizePciAddress } from '../pci/address';
import { describeHeld } from '../readiness/holder';
import { isVfioDriverName } from '../vfio/select-variant';
import { keptOnVfioAtBootWarnings } from './boot-keepers';
import {
  expectedHostDriver,
  type HostDriverExpectation,
  pfWithoutAutoprobe,
  restoreVerifyStep,
} from './restore-expect';
import {
  type BlastRadiusEntry,
  CLEAR_OVERRIDE_VALUE,
  currentDriverUnbindPath,
  DRIVERS_PROBE_PATH,
  driverBindPath,
  driverOverridePath,
  driverUnbindPath,
  type PlanRefusal,
  type PlanRefusalCode,
  type PlanStep,
  type RebindPlan,
  type RebindTarget,
} from './schema';
import { unreadableGroupRefusal } from './unreadable-group';

export type { HostDriverExpectation } from './restore-expect';

export type PlanResult = { ok: true; plan: RebindPlan } | { ok: false; refusal: PlanRefusal };

export interface PlanOptions {
  /** By address; a device without an entry is only checked to be off vfio, as before. */
  hostDrivers?: ReadonlyMap<string, HostDriverExpectation>;
}

/**
 * The warnings a plan may run past only with `force` (the agent refuses without it, and the server
 * asks for it before queuing): warning-severity reasons when moving to vfio. Giving a device back to
 * its host drivers must always be possible, so that direction never needs force; refusals (blocking
 * reasons) never become plans at all, so force cannot get past them.
 */
export function warningsNeedingForce(plan: RebindPlan): RebindPlan['warnings'] {
  return plan.target === 'vfio' ? plan.warnings.filter((r) => r.severity === 'warning') : [];
}

/** Refusal messages quote operator input; keep them within the wire schema's bounds. */
const MAX_QUOTED_INPUT = 64;
const MAX_NAME = 512;
const MAX_MESSAGE = 2000;

export function planRebind(
  snapshot: HostSnapshot,
  address: string,
  target: RebindTarget,
  options: PlanOptions = {},
): PlanResult {
  let canonical: string;
  try {
    canonical = normalizePciAddress(address);
  } catch (error) {
    if (!(error instanceof ParseError)) throw error;
    const quoted = JSON.stringify(truncate(address, MAX_QUOTED_INPUT));
    return refuse('unknown-device', `${quoted} is not a PCI address: ${error.reason}`);
  }
  const device = snapshot.devices.find((d) => d.address === canonical);
  if (device === undefined) {
    return refuse('unknown-device', `no PCI device ${canonical} on ${snapshot.host.hostname}`);
  }
  if (device.kind === 'bridge') {
    return refuse(
      'not-endpoint',
      `${canonical} is a PCI bridge: bridges stay on their host driver; pick an endpoint behind it`,
    );
  }
  const unreadable = unreadableGroupRefusal(snapshot, device);
  if (unreadable !== null) return { ok: false, refusal: unreadable };
  const endpoints = groupOf(snapshot, device).filter((d) => d.kind === 'endpoint');
  return target === 'vfio'
    ? planToVfio(snapshot, device, endpoints)
    : planToHost(snapshot, device, endpoints, options.hostDrivers ?? new Map());
}

function planToVfio(snapshot: HostSnapshot, requested: Device, endpoints: Device[]): PlanResult {
  // A VF in the same group as its PF vanishes when the PF's host driver lets go: it cannot be moved.
  const unbindsPf = (d: Device): boolean => d.driver !== null && d.driver !== d.vfio?.driver;
  const vanishing = vanishingVfs(snapshot, endpoints.filter(unbindsPf));
  const moving = endpoints.filter((d) => !vanishing.some((v) => v.vf === d.address));

  // In use is judged on what the plan touches (below): a held group already on vfio is done.
  const blocked = moving.filter((d) =>
    d.readiness.reasons.some((r) => r.severity === 'error' && r.code !== 'in-use'),
  );
  if (blocked.length > 0) {
    const who = blocked.map((d) => d.address).join(', ');
    const errors = reasonsOf(blocked, (r) => r.severity === 'error');
    const first = errors[0]?.message;
    return refuse(
      'blocked',
      `${requested.address} cannot be moved to vfio: ${who} ${blocked.length === 1 ? 'is' : 'are'} blocked${first === undefined ? '' : ` (${first})`}`,
      errors,
    );
  }

  const targets: Array<{ device: Device; module: string; driver: string }> = [];
  for (const d of moving) {
    if (d.vfio === null) {
      return refuse(
        'no-vfio-driver',
        `${d.address} has no vfio driver to bind to (no modalias to match in modules.alias)`,
      );
    }
    targets.push({ device: d, module: d.vfio.module, driver: d.vfio.driver });
  }

  const inPlace = (t: (typeof targets)[number]): boolean =>
    t.device.driver === t.driver && t.device.driverOverride === t.driver;
  const pending = targets.filter((t) => !inPlace(t));
  const touchedHeld = heldAmong(
    snapshot,
    pending.map((t) => t.device.address),
    vanishing.map((v) => v.vf),
  );
  if (touchedHeld !== null) return touchedHeld;

  const steps: PlanStep[] = [];
  const modules = new Map<string, Set<string>>();
  for (const t of pending) {
    const drivers = modules.get(t.module) ?? new Set<string>();
    drivers.add(t.driver);
    modules.set(t.module, drivers);
  }
  for (const [module, drivers] of modules) {
    steps.push({
      action: 'modprobe',
      module,
      description: `Load ${module} so its ${[...drivers].join(', ')} driver is registered.`,
    });
  }
  for (const { device: d, driver } of pending) {
    if (d.driverOverride !== driver) {
      steps.push({
        action: 'set-override',
        address: d.address,
        path: driverOverridePath(d.address),
        value: driver,
        description: `Make ${d.address} match only ${driver}, so no host driver can claim it again.`,
      });
    }
    if (d.driver !== null && d.driver !== driver) steps.push(unbindStep(d.address, d.driver));
    if (d.driver !== driver) {
      steps.push(
        probeStep(
          d.address,
          `Have the kernel probe ${d.address}; its override binds it to ${driver}.`,
        ),
      );
    }
    steps.push(
      verifyDriverStep(d.address, driver, `Check that ${d.address} is now bound to ${driver}.`),
    );
  }

  const blastRadius: BlastRadiusEntry[] = [];
  for (const { device: d, driver } of pending) {
    if (d.driver === null || d.driver === driver) continue;
    const change = isVfioDriverName(d.driver)
      ? `moves from ${d.driver} to ${driver}; a VM using it loses it`
      : `loses driver ${d.driver}`;
    blastRadius.push(blastEntry(d, d.driver, withInterfaces(change, d.netInterfaces)));
  }
  blastRadius.push(...vanishingEntries(snapshot, vanishing));

  const devices = (pending.length > 0 ? pending : targets).map((t) => t.device);
  return {
    ok: true,
    plan: {
      target: 'vfio',
      address: requested.address,
      iommuGroup: requested.iommuGroup,
      devices: devices.map((d) => d.address),
      preconditions: moving.map(precondition),
      steps,
      rollback: [...pending].reverse().flatMap((t) => rollbackFor(t.device)),
      blastRadius,
      warnings: reasonsOf(moving, (r) => r.severity !== 'error'),
      alreadyDone: pending.length === 0,
    },
  };
}

function planToHost(
  snapshot: HostSnapshot,
  requested: Device,
  endpoints: Device[],
  hostDrivers: ReadonlyMap<string, HostDriverExpectation>,
): PlanResult {
  // Readiness is deliberately not consulted: it says whether a device may go to vfio, and giving
  // a device back to the host must always be possible.
  const onVfio = (name: string | null): boolean => name !== null && isVfioDriverName(name);
  const vanishing = vanishingVfs(
    snapshot,
    endpoints.filter((d) => onVfio(d.driver)),
  );
  const leaving = endpoints.filter(
    (d) =>
      (onVfio(d.driver) || onVfio(d.driverOverride)) && !vanishing.some((v) => v.vf === d.address),
  );
  const touchedHeld = heldAmong(
    snapshot,
    leaving.map((d) => d.address),
    vanishing.map((v) => v.vf),
  );
  if (touchedHeld !== null) return touchedHeld;
  if (leaving.length === 0) {
    const where =
      requested.iommuGroup === null ? requested.address : `IOMMU group ${requested.iommuGroup}`;
    return refuse(
      'nothing-to-do',
      `nothing in ${where} is on a vfio driver or vfio driver_override`,
    );
  }

  const autoprobeOff = autoprobeOffWarnings(snapshot, leaving);
  const expected = new Map(
    leaving.map((d) => [d.address, expectedHostDriver(snapshot, d, hostDrivers)]),
  );
  const steps: PlanStep[] = [];
  const modules = new Set<string>();
  for (const d of leaving) {
    const module = expected.get(d.address)?.module ?? null;
    if (module === null || modules.has(module)) continue;
    modules.add(module);
    steps.push({
      action: 'modprobe',
      module,
      description: `Load ${module}, as udev would have at boot, so its driver can claim ${d.address}.`,
    });
  }
  for (const d of leaving) {
    // Only a vfio override is cleared: any other override is the operator's choice of host
    // driver, and drivers_probe honours it.
    if (onVfio(d.driverOverride)) {
      steps.push({
        action: 'clear-override',
        address: d.address,
        path: driverOverridePath(d.address),
        value: CLEAR_OVERRIDE_VALUE,
        description: `Clear the driver_override of ${d.address} so host drivers can match it again.`,
      });
    }
    if (d.driver !== null && onVfio(d.driver)) steps.push(unbindStep(d.address, d.driver));
    if (d.driver === null || onVfio(d.driver)) {
      steps.push(
        probeStep(
          d.address,
          `Have the kernel probe ${d.address} so its host driver, if any, claims it.`,
        ),
      );
    }
    steps.push(restoreVerifyStep(d.address, expected.get(d.address) ?? null));
  }

  const blastRadius: BlastRadiusEntry[] = [];
  for (const d of leaving) {
    if (d.driver === null || !onVfio(d.driver)) continue;
    const reason = `leaves ${d.driver}; a VM using it loses it`;
    blastRadius.push(blastEntry(d, d.driver, reason));
  }
  blastRadius.push(...vanishingEntries(snapshot, vanishing));

  return {
    ok: true,
    plan: {
      target: 'host',
      address: requested.address,
      iommuGroup: requested.iommuGroup,
      devices: leaving.map((d) => d.address),
      preconditions: endpoints.map(precondition),
      steps,
      rollback: [...leaving].reverse().flatMap(rollbackFor),
      blastRadius,
      warnings: [
        ...reasonsOf(leaving, (r) => r.severity !== 'error'),
        ...autoprobeOff,
        ...keptOnVfioAtBootWarnings(leaving),
      ],
      alreadyDone: false,
    },
  };
}

/**
 * The refusal when a plan would change, unbind or remove a device a VM holds. Never forceable:
 * on a real kernel the unbind blocks until the holder exits (every read of the device's sysfs then
 * hangs too), or the kernel asks the VM to give the device up and it is pulled out of the guest.
 */
function heldAmong(
  snapshot: HostSnapshot,
  touched: readonly string[],
  vanishing: readonly string[],
): PlanResult | null {
  const addresses = new Set([...touched, ...vanishing]);
  const held = snapshot.devices.filter((d) => d.inUse && addresses.has(d.address));
  if (held.length === 0) return null;
  const reasons = reasonsOf(held, (r) => r.code === 'in-use');
  return refuse('in-use', `refused, nothing written: ${describeHeld(held)}`, reasons);
}

/**
 * Steps that return one device to the state in the snapshot, valid after any prefix of the plan.
 * The prior driver is re-bound explicitly rather than through drivers_probe, which could pick a
 * different driver than the one the device had (another module loaded since, a changed override).
 */
function rollbackFor(d: Device): PlanStep[] {
  const prior = d.driver;
  const override = d.driverOverride;
  const steps: PlanStep[] = [];
  const restoreOverride = (value: string | null): PlanStep => ({
    action: 'restore-override',
    address: d.address,
    path: driverOverridePath(d.address),
    value: value ?? CLEAR_OVERRIDE_VALUE,
    description:
      value === null
        ? `Clear the driver_override of ${d.address}, as it was.`
        : `Restore the driver_override of ${d.address} to ${value}.`,
  });
  // The kernel only lets a driver bind a device whose override is empty or names that driver. A
  // device that was on one driver with an override naming another (the override was written after
  // it bound) needs the override cleared for the bind, then put back.
  const overrideBlocksBind = prior !== null && override !== null && override !== prior;
  steps.push(restoreOverride(overrideBlocksBind ? null : override));
  steps.push({
    action: 'unbind-current',
    address: d.address,
    path: currentDriverUnbindPath(d.address),
    value: d.address,
    description: `Unbind ${d.address} from whatever driver it is on now (skipped when it has none).`,
  });
  if (prior === null) {
    steps.push({
      action: 'verify-driver',
      address: d.address,
      expect: { kind: 'none' },
      description: `Check that ${d.address} is bound to no driver, as it was.`,
    });
    return steps;
  }
  steps.push({
    action: 'bind',
    address: d.address,
    driver: prior,
    path: driverBindPath(prior),
    value: d.address,
    description: `Bind ${d.address} back to ${prior}.`,
  });
  if (overrideBlocksBind) steps.push(restoreOverride(override));
  steps.push(
    verifyDriverStep(d.address, prior, `Check that ${d.address} is bound to ${prior} again.`),
  );
  return steps;
}

function unbindStep(address: string, driver: string): PlanStep {
  return {
    action: 'unbind',
    address,
    driver,
    path: driverUnbindPath(driver),
    value: address,
    description: `Unbind ${address} from ${driver}.`,
  };
}

function probeStep(address: string, description: string): PlanStep {
  return { action: 'probe', address, path: DRIVERS_PROBE_PATH, value: address, description };
}

function verifyDriverStep(address: string, driver: string, description: string): PlanStep {
  return { action: 'verify-driver', address, expect: { kind: 'driver', driver }, description };
}

/** The device's IOMMU group in address order; the device alone when it has no group. */
function groupOf(snapshot: HostSnapshot, device: Device): Device[] {
  if (device.iommuGroup === null) return [device];
  return snapshot.devices
    .filter((d) => d.iommuGroup === device.iommuGroup)
    .sort((a, b) => comparePciAddresses(a.address, b.address));
}

interface VanishingVf {
  vf: string;
  pf: Device;
}

/**
 * VFs that disappear when these PFs are unbound: a PF driver disables SR-IOV when it lets go.
 * They are the PF's virtfn links and the snapshot devices whose physfn is the PF (the same set
 * when the snapshot is consistent; both are read so a partial snapshot still shows them).
 */
function vanishingVfs(snapshot: HostSnapshot, unbound: Device[]): VanishingVf[] {
  const result: VanishingVf[] = [];
  const seen = new Set<string>();
  for (const pf of unbound) {
    if (pf.sriov === null || pf.sriov.numVfs === 0) continue;
    const fromSnapshot = snapshot.devices.filter((d) => d.physfn === pf.address);
    const addresses = [...pf.sriov.vfs, ...fromSnapshot.map((d) => d.address)].sort(
      comparePciAddresses,
    );
    for (const vf of addresses) {
      if (seen.has(vf)) continue;
      seen.add(vf);
      result.push({ vf, pf });
    }
  }
  return result;
}

function vanishingEntries(snapshot: HostSnapshot, vanishing: VanishingVf[]): BlastRadiusEntry[] {
  return vanishing.map(({ vf, pf }) => {
    const device = snapshot.devices.find((d) => d.address === vf);
    const base = `VF of ${pf.address}: disappears when ${pf.address} leaves ${pf.driver ?? 'its driver'} (rollback does not re-create it; set sriov_numvfs again)`;
    if (device === undefined) {
      return {
        address: vf,
        driver: null,
        name: 'virtual function',
        netInterfaces: [],
        reason: base,
      };
    }
    return blastEntry(device, device.driver, withInterfaces(base, device.netInterfaces));
  });
}

function blastEntry(d: Device, driver: string | null, reason: string): BlastRadiusEntry {
  return {
    address: d.address,
    driver,
    name: truncate(displayName(d), MAX_NAME),
    netInterfaces: [...d.netInterfaces],
    reason,
  };
}

function displayName(d: Device): string {
  const { vendor, device, className } = d.names;
  if (device === null) return className;
  return vendor === null ? device : `${vendor} ${device}`;
}

function withInterfaces(change: string, interfaces: readonly string[]): string {
  if (interfaces.length === 0) return change;
  const verb = interfaces.length === 1 ? 'disappears' : 'disappear';
  return `${change}; ${interfaces.join(', ')} ${verb}`;
}

function precondition(d: Device): RebindPlan['preconditions'][number] {
  return { address: d.address, driver: d.driver, driverOverride: d.driverOverride };
}

/**
 * The devices' reasons that pass `keep`, in device order. A reason is listed once per code and
 * device, and a group-wide reason that every member carries verbatim is listed once in all.
 */
/**
 * The kernel only probes a VF without a driver_override when its PF's sriov_drivers_autoprobe is 1
 * (pci_device_can_probe), so once restore clears the vfio override such a VF stays unbound.
 */
function autoprobeOffWarnings(snapshot: HostSnapshot, leaving: Device[]): ReadinessReason[] {
  const warnings: ReadinessReason[] = [];
  for (const d of leaving) {
    const pf = pfWithoutAutoprobe(snapshot, d);
    if (pf === null) continue;
    warnings.push({
      code: 'vf-autoprobe-off',
      severity: 'warning',
      message: `${d.address} is a VF of ${pf.address}, whose sriov_drivers_autoprobe is 0: once its vfio driver_override is cleared no host driver probes it, so it stays unbound.`,
      remedy: `echo 1 > /sys/bus/pci/devices/${pf.address}/sriov_drivers_autoprobe before restoring, or bind ${d.address} to its host driver explicitly afterwards.`,
      related: [pf.address],
    });
  }
  return warnings;
}

function reasonsOf(devices: Device[], keep: (r: ReadinessReason) => boolean): ReadinessReason[] {
  const result: ReadinessReason[] = [];
  const seen = new Set<string>();
  for (const d of devices) {
    for (const reason of d.readiness.reasons) {
      if (!keep(reason)) continue;
      const perDevice = `${reason.code}@${d.address}`;
      const content = JSON.stringify([reason.code, reason.message, reason.related]);
      if (seen.has(perDevice) || seen.has(content)) continue;
      seen.add(perDevice);
      seen.add(content);
      result.push(reason);
    }
  }
  return result;
}

function refuse(
  code: PlanRefusalCode,
  message: string,
  reasons: ReadinessReason[] = [],
): PlanResult {
  return { ok: false, refusal: { code, message: truncate(message, MAX_MESSAGE), reasons } };
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
