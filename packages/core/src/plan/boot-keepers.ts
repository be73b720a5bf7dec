/**
 * A restore gives a device back to its host driver until the next boot; a keeper other than ours
 * (driverctl, vfio-pci.ids, modprobe.d) binds it to vfio again then. The restore forgets our own
 * record, so only the others are worth a word: the operator has to remove them by hand.
 */
import type { Device, ReadinessReason } from '../inventory/schema';
import { clip } from '../readiness/bounded-text';
import { isVfioDriverName } from '../vfio/select-variant';

export function keptOnVfioAtBootWarnings(leaving: readonly Device[]): ReadinessReason[] {
  const warnings: ReadinessReason[] = [];
  for (const d of leaving) {
    const others = d.keptBy.filter((k) => k.keeper !== 'vfio-fleet' && isVfioDriverName(k.driver));
    if (others.length === 0) continue;
    const where = others.map((k) => `${k.keeper} (${k.source})`).join(', ');
    warnings.push({
      code: 'kept-on-vfio-at-boot',
      severity: 'info',
      message: clip(
        `${d.address} goes back to vfio at the next reboot: bound there at boot by ${where}.`,
      ),
      remedy: clip(
        `Remove it from ${where} to keep ${d.address} on its host driver after a reboot.`,
      ),
      related: [],
    });
  }
  return warnings;
}
