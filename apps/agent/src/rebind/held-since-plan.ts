/**
 * The executor's last look before its first write. A VM may have started since the snapshot the
 * plan came from, and on a real kernel an unbind of a device it holds blocks until the VM exits
 * (no signal ends the writer), or pulls the device out of the running guest. So `enable` of every
 * device the plan touches (and of the VFs its PFs take with them) is read again; /proc is walked
 * only to name a holder found.
 */
import { describeHolder, IN_USE_REMEDY, type RebindPlan } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { readHolders } from '../inventory/read-holders';
import { linkBasename } from '../inventory/sysfs-values';

const PCI_DEVICES = '/sys/bus/pci/devices';

/** Why the job must stop, naming each held device and its holder; null when none is held. */
export async function heldSincePlan(fs: HostFs, plan: RebindPlan): Promise<string | null> {
  const addresses = [...new Set([...plan.devices, ...plan.preconditions.map((p) => p.address)])];
  const held = [
    ...(await heldOf(fs, addresses)),
    ...(await heldOf(fs, await vfsOf(fs, addresses))),
  ];
  if (held.length === 0) return null;
  return `${held.join('; ')}: it was taken after the host was read (a VM may have started), so nothing was written. ${IN_USE_REMEDY}`;
}

/**
 * The same look right before an unbind in the middle of a job: a VM can open a device on a vfio
 * driver whenever its group is viable, between two of the job's writes as well. Null when free.
 */
export async function heldBeforeUnbind(fs: HostFs, address: string): Promise<string | null> {
  const held = [
    ...(await heldOf(fs, [address])),
    // A PF's driver disables SR-IOV as it leaves: removing a held VF blocks the same way.
    ...(await heldOf(fs, await vfsOf(fs, [address]))),
  ];
  if (held.length === 0) return null;
  return `${held.join('; ')}: it was taken during the job (a VM may have started), so it was not unbound (that write would block until the VM lets go). ${IN_USE_REMEDY}`;
}

async function heldOf(fs: HostFs, addresses: readonly string[]): Promise<string[]> {
  const candidates = [];
  for (const address of addresses) {
    // Read now, not from the plan: only a device on a vfio driver can be held by a user.
    const driver = linkBasename(await fs.readLink(`${PCI_DEVICES}/${address}/driver`));
    const group = linkBasename(await fs.readLink(`${PCI_DEVICES}/${address}/iommu_group`));
    candidates.push({ address, driver, iommuGroup: group === null ? null : Number(group) });
  }
  const { uses } = await readHolders(fs, candidates);
  return addresses.flatMap((address) => {
    const use = uses.get(address);
    return use?.inUse === true ? [`${address} is in use by ${describeHolder(use.holder)}`] : [];
  });
}

/** The VFs of the PFs among `addresses` (their `virtfn<N>` links): they go when the PF's driver does. */
async function vfsOf(fs: HostFs, addresses: readonly string[]): Promise<string[]> {
  const vfs: string[] = [];
  for (const address of addresses) {
    for (const entry of await fs.listDir(`${PCI_DEVICES}/${address}`)) {
      if (!/^virtfn\d+$/.test(entry)) continue;
      const vf = linkBasename(await fs.readLink(`${PCI_DEVICES}/${address}/${entry}`));
      if (vf !== null && !addresses.includes(vf)) vfs.push(vf);
    }
  }
  return vfs;
}
