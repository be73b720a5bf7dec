/**
 * Whether a device's binding survives a reboot, said one way for the CLI, the API and the
 * dashboard (a keeper's name is its label). A sysfs binding is gone at the next boot unless a keeper (inventory/schema KEEPERS)
 * binds the device to the same kind of driver again.
 */

import type { DeviceFacts, Keeper } from '../inventory/schema';
import { isVfioDriverName } from '../vfio/select-variant';

export type BootFate =
  /** On vfio, and something binds it to vfio again at boot. */
  | { kind: 'kept'; keepers: Keeper[] }
  /** On vfio, and nothing does: it returns to its host driver at the next reboot. */
  | { kind: 'lost' }
  /** Not on vfio now: nothing of ours to keep. */
  | { kind: 'not-bound' };

export function bootFate(device: Pick<DeviceFacts, 'driver' | 'keptBy'>): BootFate {
  if (device.driver === null || !isVfioDriverName(device.driver)) return { kind: 'not-bound' };
  const keepers = [
    ...new Set(device.keptBy.filter((k) => isVfioDriverName(k.driver)).map((k) => k.keeper)),
  ];
  return keepers.length === 0 ? { kind: 'lost' } : { kind: 'kept', keepers };
}

/** `kept by vfio-fleet, driverctl`, `nobody keeps it (lost at reboot)`, or null when not bound. */
export function describeBootFate(fate: BootFate): string | null {
  switch (fate.kind) {
    case 'kept':
      return `kept by ${fate.keepers.join(', ')}`;
    case 'lost':
      return 'nobody keeps it (lost at reboot)';
    case 'not-bound':
      return null;
  }
}
