/**
 * What `scan` reads of the processes holding vfio devices, for a capture: their vfio fd links,
 * `comm`, and of `cmdline` only argv[0] and the options that name the VM (the rest of a VMM's
 * command line can carry secrets). Nothing of /proc is read unless a vfio device is held, just as
 * in a scan.
 */
import type { HostFs } from '../host-fs';
import { nameArgs, splitCmdline } from '../inventory/holder-command-line';
import { MAX_CMDLINE_BYTES, readEnabled, scanProcesses } from '../inventory/read-holders';
import { PCI_DEVICES_DIR } from '../inventory/read-pci-devices';
import { linkBasename } from '../inventory/sysfs-values';

export interface HolderCopier {
  copy(p: string): Promise<boolean>;
  writeText(p: string, text: string): Promise<void>;
}

export async function captureHolders(source: HostFs, copier: HolderCopier): Promise<void> {
  const candidates = [];
  for (const address of await source.listDir(PCI_DEVICES_DIR)) {
    const dir = `${PCI_DEVICES_DIR}/${address}`;
    candidates.push({
      address,
      driver: linkBasename(await source.readLink(`${dir}/driver`)),
      iommuGroup: null,
    });
  }
  const enabled = await readEnabled(source, candidates);
  if (![...enabled.values()].some((held) => held)) return;
  const { processes } = await scanProcesses(source);
  for (const process of processes) {
    const dir = `/proc/${process.pid}`;
    for (const fd of process.fds) await copier.copy(`${dir}/fd/${fd}`);
    await copier.copy(`${dir}/comm`);
    const cmdline = await source.readHead(`${dir}/cmdline`, MAX_CMDLINE_BYTES);
    if (cmdline !== null) {
      const kept = nameArgs(splitCmdline(cmdline));
      await copier.writeText(`${dir}/cmdline`, kept.map((arg) => `${arg}\0`).join(''));
    }
  }
}
