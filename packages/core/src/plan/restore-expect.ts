/**
 * What a restore must leave each device on, so that "restored" means back on its host driver and
 * not merely off vfio: the driver it had before it went to vfio (recorded by the agent), or for a
 * device on vfio since boot, the one the kernel's own `pci:` aliases pick for its modalias.
 */

import type { Device, HostSnapshot } from '../inventory/schema';
import type { AliasIndex } from '../kmod/alias-index';
import { isVfioDriverName } from '../vfio/select-variant';
import type { PlanStep } from './schema';

/**
 * The host driver a restore must end a device on: the one it had before it went to vfio (the agent
 * records it), or, for a device on vfio since boot, what the kernel's `pci:` aliases pick for its
 * modalias. `driver` null: no host driver claims it, so it must end unbound. `module`: a module to
 * load first because it is not loaded (udev would have loaded it at boot); null when loaded.
 */
export interface HostDriverExpectation {
  driver: string | null;
  module: string | null;
}

/**
 * The host driver the kernel would give a device on vfio since boot: the `pci:` aliases matching
 * its modalias, in modules.alias order (kmod's), preferring a module already loaded (its driver is
 * registered, so drivers_probe finds it first) and skipping modprobe.d `blacklist`ed ones as kmod
 * does (nouveau on an nvidia host). No match: no host driver (`driver` null).
 * `loadedDrivers` maps a loaded module to its PCI driver name (/sys/module/<m>/drivers).
 */
export function hostDriverFromAliases(
  index: AliasIndex,
  modalias: string,
  loadedDrivers: ReadonlyMap<string, string>,
  blacklisted: ReadonlySet<string> = new Set(),
): HostDriverExpectation {
  const modules = [
    ...new Set(
      index
        .match(modalias)
        // kmod skips a blacklisted module when loading by alias (udev at boot), not when loaded.
        .filter((entry) => entry.bus === 'pci')
        .filter((entry) => !blacklisted.has(entry.module) || loadedDrivers.has(entry.module))
        .sort((a, b) => a.line - b.line)
        .map((entry) => entry.module),
    ),
  ];
  const loaded = modules.find((m) => loadedDrivers.has(m));
  if (loaded !== undefined) return { driver: loadedDrivers.get(loaded) ?? loaded, module: null };
  const [first] = modules;
  // Not loaded: the driver a module registers is its name with `-` as `_` (KBUILD_MODNAME).
  return first === undefined ? { driver: null, module: null } : { driver: first, module: first };
}

/**
 * What a restored device must end on. An operator's (non-vfio) override wins, as drivers_probe
 * honours it; a VF whose PF does not autoprobe stays unbound (warned); otherwise the expectation.
 */
export function expectedHostDriver(
  snapshot: HostSnapshot,
  d: Device,
  hostDrivers: ReadonlyMap<string, HostDriverExpectation>,
): { expect: string | null; module: string | null } | null {
  if (d.driver !== null && !isVfioDriverName(d.driver)) return null;
  if (d.driverOverride !== null && !isVfioDriverName(d.driverOverride)) {
    return { expect: d.driverOverride, module: null };
  }
  if (pfWithoutAutoprobe(snapshot, d) !== null) return { expect: null, module: null };
  const known = hostDrivers.get(d.address);
  if (known === undefined) return null;
  return { expect: known.driver, module: known.driver === null ? null : known.module };
}

export function restoreVerifyStep(
  address: string,
  expected: { expect: string | null } | null,
): PlanStep {
  if (expected === null) {
    return {
      action: 'verify-driver',
      address,
      expect: { kind: 'not-vfio' },
      description: `Check that ${address} is no longer on a vfio driver.`,
    };
  }
  if (expected.expect === null) {
    return {
      action: 'verify-driver',
      address,
      expect: { kind: 'none' },
      description: `Check that ${address} is on no driver: no host driver claims it.`,
    };
  }
  return verifyDriverStep(
    address,
    expected.expect,
    `Check that ${address} is back on its host driver ${expected.expect}.`,
  );
}

/** The PF of a VF whose sriov_drivers_autoprobe is 0; null for anything else. */
export function pfWithoutAutoprobe(snapshot: HostSnapshot, d: Device): Device | null {
  if (d.physfn === null) return null;
  const pf = snapshot.devices.find((p) => p.address === d.physfn);
  return pf?.sriov?.driversAutoprobe === false ? pf : null;
}

function verifyDriverStep(address: string, driver: string, description: string): PlanStep {
  return { action: 'verify-driver', address, expect: { kind: 'driver', driver }, description };
}
