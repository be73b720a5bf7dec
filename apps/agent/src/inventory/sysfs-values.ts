/**
 * Decoding of the small value formats sysfs and procfs use, shared by the collectors so every one
 * of them treats odd values (missing, `0x` prefixes, uppercase) the same way.
 */
import { PCI_ADDRESS_PATTERN } from '@vfio-fleet/core';

/** `0x15B3\n` → `15b3` when it has exactly `digits` hex digits; null otherwise. */
export function parseHexAttr(value: string | null, digits: number): string | null {
  if (value === null) return null;
  const hex = value.trim().toLowerCase().replace(/^0x/, '');
  return new RegExp(`^[0-9a-f]{${digits}}$`).test(hex) ? hex : null;
}

/** Decimal attribute (`sriov_totalvfs`, `numa_node`); null when absent or not a number. */
export function parseIntAttr(value: string | null): number | null {
  if (value === null || !/^-?\d+$/.test(value.trim())) return null;
  return Number.parseInt(value.trim(), 10);
}

/**
 * The PCI addresses a sysfs path goes through, outermost first. The kernel names every PCI
 * device directory by its address, so the path text alone identifies the controllers above a
 * block device or netdev, even when the link is dangling (as in captured snapshots).
 */
export function pciAddressesInPath(p: string): string[] {
  return p.split('/').filter((part) => PCI_ADDRESS_PATTERN.test(part));
}

/** The deepest PCI device in a path: the controller that owns whatever the path ends in. */
export function deepestPciAddress(p: string): string | null {
  return pciAddressesInPath(p).at(-1) ?? null;
}

/** Last path component of a link target (`../../../bus/pci/drivers/nvidia` → `nvidia`). */
export function linkBasename(target: string | null): string | null {
  if (target === null) return null;
  const base = target
    .split('/')
    .filter((part) => part !== '')
    .at(-1);
  return base === undefined || base === '..' || base === '.' ? null : base;
}
