/**
 * Damages one device of a built tree the way a function that fell off the bus, or broken
 * firmware, shows itself in sysfs: identity files that read as garbage or are gone. Its
 * iommu_groups entry stays, as the kernel's does, so tests can check that the group is still
 * judged with the device in it.
 */
import { realpath, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PCI_BUS_DEVICES_DIR } from './build-tree';

/** Per file: the text it reads (a newline is added, as sysfs does) or null to delete it. */
export interface DeviceCorruption {
  vendor?: string | null;
  device?: string | null;
  class?: string | null;
  modalias?: string | null;
}

/** The default: a vendor id of "zzz", no class file, a modalias that is not one. */
export const GARBAGE: Readonly<DeviceCorruption> = {
  vendor: 'zzz',
  class: null,
  modalias: 'garbage',
};

export async function corruptDevice(
  root: string,
  address: string,
  corruption: Readonly<DeviceCorruption> = GARBAGE,
): Promise<void> {
  // The bus entry is a link into the device hierarchy, where the files are.
  const dir = await realpath(path.join(root, ...PCI_BUS_DEVICES_DIR.split('/'), address));
  for (const [name, value] of Object.entries(corruption)) {
    if (value === undefined) continue;
    const file = path.join(dir, name);
    if (value === null) await rm(file, { force: true });
    else await writeFile(file, `${value}\n`);
  }
}
