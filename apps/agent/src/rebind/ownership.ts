/**
 * Who keeps each vfio binding in place across a reboot, and where the mechanisms contradict each
 * other: hosts often carry several at once, set up by different people over the years. `status`
 * lists them per device and flags what bites at the next reboot. The claims themselves are read
 * by inventory/read-kept-by, which every scan reports too.
 */
import { type Device, type HostSnapshot, isVfioDriverName, type KeptBy } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { claimsOf, readBootClaims } from '../inventory/read-kept-by';
import type { PersistedBinding } from './bindings-file';

export type Mechanism = 'persisted' | 'driverctl' | 'cmdline' | 'modprobe.d';

export interface OwnershipClaim {
  mechanism: Mechanism;
  /** The driver this mechanism binds the device to. */
  driver: string;
  /** Where it comes from: a file, or `/proc/cmdline`. */
  source: string;
}

export type OwnershipProblemCode =
  | 'mechanisms-disagree'
  | 'not-in-effect'
  | 'not-persisted'
  | 'persisted-device-changed'
  | 'persisted-device-absent';

export interface OwnershipProblem {
  code: OwnershipProblemCode;
  address: string;
  message: string;
}

export interface DeviceOwnership {
  address: string;
  vendorId: string;
  deviceId: string;
  driver: string | null;
  driverOverride: string | null;
  claims: OwnershipClaim[];
}

export interface OwnershipReport {
  devices: DeviceOwnership[];
  problems: OwnershipProblem[];
}

const MECHANISM: Record<KeptBy['keeper'], Mechanism> = {
  'vfio-fleet': 'persisted',
  driverctl: 'driverctl',
  'vfio-pci.ids': 'cmdline',
  'modprobe.d': 'modprobe.d',
};

export async function analyzeOwnership(
  fs: HostFs,
  snapshot: HostSnapshot,
  persisted: readonly PersistedBinding[],
): Promise<OwnershipReport> {
  const boot = await readBootClaims(fs, snapshot.host.cmdline.vfioPciIds);
  const problems: OwnershipProblem[] = [];
  const devices: DeviceOwnership[] = [];

  for (const device of snapshot.devices) {
    const record = persisted.find((b) => b.address === device.address);
    if (
      record !== undefined &&
      (record.vendorId !== device.vendorId || record.deviceId !== device.deviceId)
    ) {
      problems.push({
        code: 'persisted-device-changed',
        address: device.address,
        message: `${device.address} is persisted as ${record.vendorId}:${record.deviceId} but holds ${device.vendorId}:${device.deviceId} now: the agent will not re-bind it`,
      });
    }
    const claims: OwnershipClaim[] = claimsOf(device, boot, persisted).map((c) => ({
      mechanism: MECHANISM[c.keeper],
      driver: c.driver,
      source: c.source,
    }));

    const onVfio = device.driver !== null && isVfioDriverName(device.driver);
    const vfioOverride = device.driverOverride !== null && isVfioDriverName(device.driverOverride);
    const vfioClaim = claims.some((c) => isVfioDriverName(c.driver));
    if (!onVfio && !vfioOverride && !vfioClaim) continue;

    devices.push({
      address: device.address,
      vendorId: device.vendorId,
      deviceId: device.deviceId,
      driver: device.driver,
      driverOverride: device.driverOverride,
      claims,
    });
    problems.push(...problemsOf(device, claims, onVfio));
  }

  for (const record of persisted) {
    if (!snapshot.devices.some((d) => d.address === record.address)) {
      problems.push({
        code: 'persisted-device-absent',
        address: record.address,
        message: `${record.address} is persisted (to ${record.driver}) but not on this host`,
      });
    }
  }
  return { devices, problems };
}

function problemsOf(
  device: Device,
  claims: readonly OwnershipClaim[],
  onVfio: boolean,
): OwnershipProblem[] {
  const problems: OwnershipProblem[] = [];
  const address = device.address;
  const drivers = [...new Set(claims.map((c) => c.driver))];
  if (drivers.length > 1) {
    const who = claims.map((c) => `${label(c)} → ${c.driver}`).join(', ');
    problems.push({
      code: 'mechanisms-disagree',
      address,
      message: `${address}: mechanisms disagree (${who}); which wins at boot depends on load order`,
    });
  }
  for (const claim of claims) {
    if (claim.driver === device.driver) continue;
    problems.push({
      code: 'not-in-effect',
      address,
      message: `${address}: ${label(claim)} binds it to ${claim.driver}, but it is on ${device.driver ?? 'no driver'}`,
    });
  }
  if (onVfio && claims.length === 0) {
    problems.push({
      code: 'not-persisted',
      address,
      message: `${address} is on ${device.driver ?? ''} but nothing persists it: it returns to its host driver at the next reboot (bind --persist, or driverctl)`,
    });
  }
  return problems;
}

function label(claim: OwnershipClaim): string {
  switch (claim.mechanism) {
    case 'persisted':
      return 'persisted binding';
    case 'driverctl':
      return `driverctl (${claim.source})`;
    case 'cmdline':
      return 'vfio-pci.ids on the kernel command line';
    case 'modprobe.d':
      return `vfio-pci ids in ${claim.source}`;
  }
}
