/**
 * Adding and removing one PCI function in an existing tree, for the kernel model's hot-plug. The
 * device itself is written by build-tree's per-object writers (so its files and links are exactly
 * what buildHostTree writes); this file only works out where it goes from the tree already there.
 */
import path from 'node:path';
import {
  type HostLayout,
  IOMMU_GROUPS_DIR,
  type PlacedDevice,
  planHostLayout,
  writeIommuGroup,
  writePciDevice,
} from './build-tree';
import type { CpuVendor, DeviceSpec } from './host-spec';
import {
  type DeviceState,
  type ModelState,
  PCI_BUS_DEVICES_DIR,
  type SysTree,
} from './kernel-model-tree';

/** Writes the device unbound and parks its netdevs until a host driver binds it. */
export async function plugDevice(
  tree: SysTree,
  state: ModelState,
  spec: DeviceSpec,
): Promise<void> {
  if (await tree.exists(`${PCI_BUS_DEVICES_DIR}/${spec.address}`)) {
    throw new Error(`hotplug ${spec.address}: a device with that address is already present`);
  }
  const dir = await placeDevice(tree, spec);
  // planHostLayout applies the spec's defaults (resets, group); the model binds afterwards, so
  // the device is written without a driver.
  const placed = planHostLayout({
    hostname: 'hotplug',
    machineId: '0'.repeat(32),
    kernelRelease: await tree.release(),
    cpuVendor: await cpuVendor(tree),
    cmdline: '',
    iommu: { enabled: true },
    modulesAlias: null,
    loadedModules: [],
    devices: [{ ...spec, driver: null, parent: undefined, physfn: undefined }],
  }).devices[0];
  if (placed === undefined) throw new Error(`hotplug ${spec.address}: could not place the device`);
  const device: PlacedDevice = { ...placed, spec: { ...spec, driver: null }, path: dir };
  const byAddress = new Map<string, PlacedDevice>([[spec.address, device]]);
  if (spec.physfn !== undefined) {
    const pfPath = await tree.resolve(`${PCI_BUS_DEVICES_DIR}/${spec.physfn}`);
    if (pfPath !== null) {
      byAddress.set(spec.physfn, {
        ...device,
        spec: { ...spec, address: spec.physfn },
        path: pfPath,
      });
    }
  }
  const layout: HostLayout = {
    spec: {
      hostname: 'hotplug',
      machineId: '0'.repeat(32),
      kernelRelease: '',
      cpuVendor: 'intel',
      cmdline: '',
      iommu: { enabled: true },
      modulesAlias: null,
      loadedModules: [],
      devices: [spec],
    },
    devices: [device],
    byAddress,
    drivers: new Map(),
    modules: new Map(),
    iommuUnits: [],
    interruptRemapping: false,
  };
  await writePciDevice(tree.out, layout, device);
  await joinGroup(tree, device);
  await linkVirtfn(tree, spec, dir);
  await parkNetdevs(tree, state, spec, dir);
}

/** Undoes plugDevice for a device already unbound: group, PF and bus links, then its directory. */
export async function unplugDevice(tree: SysTree, device: DeviceState): Promise<void> {
  if (device.iommuGroup !== null) {
    const groupDir = `${IOMMU_GROUPS_DIR}/${device.iommuGroup}`;
    await tree.remove(`${groupDir}/devices/${device.address}`);
    // iommu_group_release: a group with no devices left is gone.
    if ((await tree.list(`${groupDir}/devices`)).length === 0) await tree.remove(groupDir);
  }
  if (device.physfn !== null) {
    const pf = await tree.device(device.physfn);
    if (pf !== null) {
      for (const entry of await tree.list(pf.path)) {
        if (!/^virtfn\d+$/.test(entry)) continue;
        if ((await tree.resolve(`${pf.path}/${entry}`)) === device.path) {
          await tree.remove(`${pf.path}/${entry}`);
        }
      }
    }
  }
  await tree.remove(`${PCI_BUS_DEVICES_DIR}/${device.address}`);
  await tree.remove(device.path);
}

/** Under its bridge, beside its PF (VFs join the PF's bus), or on its root bus. */
async function placeDevice(tree: SysTree, spec: DeviceSpec): Promise<string> {
  if (spec.parent !== undefined) {
    const parent = await tree.resolve(`${PCI_BUS_DEVICES_DIR}/${spec.parent}`);
    if (parent === null) throw new Error(`hotplug ${spec.address}: no bridge ${spec.parent}`);
    return `${parent}/${spec.address}`;
  }
  if (spec.physfn !== undefined) {
    const pf = await tree.resolve(`${PCI_BUS_DEVICES_DIR}/${spec.physfn}`);
    if (pf === null) throw new Error(`hotplug ${spec.address}: no PF ${spec.physfn}`);
    return `${path.posix.dirname(pf)}/${spec.address}`;
  }
  const [domain = '0000', bus = '00'] = spec.address.split(':');
  return `sys/devices/pci${domain}:${bus}/${spec.address}`;
}

async function joinGroup(tree: SysTree, device: PlacedDevice): Promise<void> {
  const group = device.iommuGroup;
  if (group === null) return;
  const groupDir = `${IOMMU_GROUPS_DIR}/${group}`;
  if (await tree.exists(groupDir)) {
    await tree.out.link(`${groupDir}/devices/${device.spec.address}`, device.path);
    return;
  }
  // A new group takes the default domain type the other groups have (iommu=pt → identity).
  let type: 'DMA' | 'identity' = 'DMA';
  for (const other of await tree.list(IOMMU_GROUPS_DIR)) {
    if ((await tree.text(`${IOMMU_GROUPS_DIR}/${other}/type`))?.trim() === 'identity') {
      type = 'identity';
    }
  }
  await writeIommuGroup(tree.out, group, type, await cpuVendor(tree), [device]);
}

/** The PF's next `virtfn<N>`: a VF's index follows the ones already enabled. */
async function linkVirtfn(tree: SysTree, spec: DeviceSpec, dir: string): Promise<void> {
  if (spec.physfn === undefined) return;
  const pf = await tree.resolve(`${PCI_BUS_DEVICES_DIR}/${spec.physfn}`);
  if (pf === null) return;
  const taken = (await tree.list(pf)).filter((e) => /^virtfn\d+$/.test(e)).length;
  await tree.out.link(`${pf}/virtfn${taken}`, dir);
}

async function parkNetdevs(
  tree: SysTree,
  state: ModelState,
  spec: DeviceSpec,
  dir: string,
): Promise<void> {
  const names = spec.netInterfaces ?? [];
  if (names.length === 0) return;
  let owner = dir;
  let virtioDir: string | null = null;
  if (spec.virtioNet === true) {
    virtioDir = `${dir}/virtio${await nextVirtioIndex(tree)}`;
    owner = virtioDir;
  }
  state.netdevs[spec.address] = names.map((name) => ({
    name,
    dir: `${owner}/net/${name}`,
    owner,
    operstate: 'up',
    virtioDir,
  }));
}

async function nextVirtioIndex(tree: SysTree): Promise<number> {
  let next = 0;
  for (const name of await tree.list('sys/class/net')) {
    const dir = (await tree.resolve(`sys/class/net/${name}`)) ?? '';
    const index = /\/virtio(\d+)\//.exec(dir)?.[1];
    if (index !== undefined) next = Math.max(next, Number(index) + 1);
  }
  return next;
}

async function cpuVendor(tree: SysTree): Promise<CpuVendor> {
  const cpuinfo = (await tree.text('proc/cpuinfo')) ?? '';
  if (cpuinfo.includes('GenuineIntel')) return 'intel';
  if (cpuinfo.includes('AuthenticAMD')) return 'amd';
  return 'arm';
}
