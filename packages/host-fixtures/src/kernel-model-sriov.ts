/**
 * `sriov_numvfs` writes, as sriov_numvfs_store (drivers/pci/iov.c) answers them: kstrtou16 of the
 * value (EINVAL on anything else), ERANGE above sriov_totalvfs, the current count a no-op, ENOENT
 * without a driver or with one that has no sriov_configure, EBUSY from one non-zero count to
 * another. Writing N creates the VFs (sriov_enable / pci_iov_add_virtfn): each at the PF's routing
 * id + offset + n * stride, with sriov_vf_device's id, in its own IOMMU group (the shared notes
 * measured that on 6.1), probed when the PF's sriov_drivers_autoprobe is 1. Writing 0 removes
 * them in index order (sriov_disable), and a VF a user holds blocks the write until it is
 * released, with the PF's device lock held all along: its lock-taking attributes hang for
 * readers (kernel-model-device-lock).
 */
import path from 'node:path';
import { IOMMU_GROUPS_DIR } from './build-tree';
import type { DeviceSpec } from './host-spec';
import type { DriverCore } from './kernel-model-driver-core';
import { plugDevice, unplugDevice } from './kernel-model-hotplug';
import { fail, type Held } from './kernel-model-kernel';
import type { DeviceState } from './kernel-model-tree';
import { addressOfRoutingId, routingId } from './pci-routing';

/** PF drivers with a sriov_configure callback (the ones sysfs can configure). */
const SRIOV_CONFIGURE = new Set([
  'mlx5_core',
  'i40e',
  'ice',
  'ixgbe',
  'igb',
  'bnxt_en',
  'nvme',
  'qede',
  'nfp',
  'cxgb4',
  'ionic',
]);

/** kstrtou16(buf, 0): optional `+`, 0x hex or 0 octal or decimal, one trailing newline. */
export function parseU16(value: string): number | null {
  let text = value.endsWith('\n') ? value.slice(0, -1) : value;
  if (text.startsWith('+')) text = text.slice(1);
  let n: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(text)) n = Number.parseInt(text.slice(2), 16);
  else if (/^0[0-7]*$/.test(text)) n = Number.parseInt(text, 8);
  else if (/^[1-9][0-9]*$/.test(text)) n = Number(text);
  else return null;
  return n <= 0xffff ? n : null;
}

export async function writeNumVfs(
  core: DriverCore,
  held: Held,
  hostPath: string,
  pf: DeviceState,
  value: string,
): Promise<void> {
  // A 0-byte write never reaches store().
  if (value === '') return;
  const count = parseU16(value);
  if (count === null) throw fail('EINVAL', hostPath);
  const total = Number((await core.tree.text(`${pf.path}/sriov_totalvfs`))?.trim() ?? '0');
  if (count > total) throw fail('ERANGE', hostPath);
  if (count === pf.numVfs) return;
  if (pf.driver === null || !SRIOV_CONFIGURE.has(pf.driver)) throw fail('ENOENT', hostPath);
  if (count === 0) return disableVfs(core, held, pf);
  // "%d VFs already enabled. Disable before enabling %d VFs"
  if (pf.numVfs > 0) throw fail('EBUSY', hostPath);
  await enableVfs(core, held, pf, count);
}

async function enableVfs(
  core: DriverCore,
  held: Held,
  pf: DeviceState,
  count: number,
): Promise<void> {
  const { tree } = core;
  const number = async (name: string, fallback: number) => {
    const parsed = Number((await tree.text(`${pf.path}/${name}`))?.trim());
    return Number.isInteger(parsed) ? parsed : fallback;
  };
  const hex = async (name: string) =>
    (await tree.text(`${pf.path}/${name}`))?.trim().replace(/^0x/, '') ?? '';
  const offset = await number('sriov_offset', 1);
  const stride = await number('sriov_stride', 1);
  const vfDevice = (await hex('sriov_vf_device')) || (await hex('device'));
  const domain = pf.address.split(':')[0] ?? '0000';
  // iov->num_VFs is set before the VFs are added.
  await tree.out.attr(`${pf.path}/sriov_numvfs`, count);
  for (let n = 0; n < count; n += 1) {
    const spec: DeviceSpec = {
      address: addressOfRoutingId(domain, routingId(pf.address) + offset + n * stride),
      vendorId: await hex('vendor'),
      deviceId: vfDevice,
      subsystemVendorId: await hex('subsystem_vendor'),
      subsystemDeviceId: await hex('subsystem_device'),
      classCode: pf.classCode,
      driver: null,
      physfn: pf.address,
      iommuGroup: pf.iommuGroup === null ? null : await freeGroup(core),
      numaNode: await number('numa_node', -1),
      // A VF has no secondary bus to reset.
      resetMethods: ['flr'],
    };
    const state = await tree.loadState();
    await plugDevice(tree, state, spec);
    const vf = await tree.device(spec.address);
    if (vf !== null && (await autoprobes(core, pf))) await core.attach(held, state, vf);
    await tree.saveState(state);
  }
}

/** pci_bus_add_device probes a new VF when the bus and its PF's sriov_drivers_autoprobe allow. */
async function autoprobes(core: DriverCore, pf: DeviceState): Promise<boolean> {
  if ((await core.tree.text('sys/bus/pci/drivers_autoprobe'))?.trim() === '0') return false;
  return (await core.tree.text(`${pf.path}/sriov_drivers_autoprobe`))?.trim() !== '0';
}

/** iommu_group_alloc takes the lowest free id (ida_alloc). */
async function freeGroup(core: DriverCore): Promise<number> {
  const used = new Set((await core.tree.list(IOMMU_GROUPS_DIR)).map(Number));
  for (let id = 0; ; id += 1) if (!used.has(id)) return id;
}

/**
 * sriov_disable: each VF leaves its driver and is removed, in index order. A held VF blocks the
 * write with the PF's device lock taken: the PF's own attributes hang for readers and any other
 * model operation on the PF waits, until the holder lets go.
 */
async function disableVfs(core: DriverCore, held: Held, pf: DeviceState): Promise<void> {
  const { tree, kernel } = core;
  const vfs: string[] = [];
  const links = (await tree.list(pf.path)).filter((e) => /^virtfn\d+$/.test(e));
  links.sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)));
  for (const link of links) {
    const dir = await tree.resolve(`${pf.path}/${link}`);
    if (dir !== null) vfs.push(dir.slice(dir.lastIndexOf('/') + 1));
  }
  let finish: () => void = () => undefined;
  const locked = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let unlockPf: (() => Promise<void>) | null = null;
  try {
    for (const address of vfs) {
      const vf = await tree.device(address);
      if (vf === null) continue;
      if (kernel.holds.isHeld(address) && unlockPf === null) {
        kernel.probing.set(pf.address, locked);
        unlockPf = await kernel.locked.lock(pf.path);
      }
      // Unbinds it, once free when held.
      if (!(await core.blockWhileHeld(held, [vf]))) {
        const state = await tree.loadState();
        await core.unbindDevice(state, vf);
        await tree.saveState(state);
      }
      const state = await tree.loadState();
      delete state.netdevs[address];
      await tree.saveState(state);
      const gone = await tree.device(address);
      if (gone !== null) await unplugDevice(tree, gone);
    }
    kernel.locked.update(path.resolve(tree.abs(`${pf.path}/sriov_numvfs`)), '0\n');
  } finally {
    if (unlockPf !== null) {
      await unlockPf();
      if (kernel.probing.get(pf.address) === locked) kernel.probing.delete(pf.address);
    }
    finish();
  }
  await tree.out.attr(`${pf.path}/sriov_numvfs`, 0);
}
