/**
 * Reads every PCI function under /sys/bus/pci/devices (formats in docs/host-files.md). Only the
 * identity attributes are required; everything else missing becomes null or empty, because
 * captured snapshots and old kernels lack many files.
 */
import {
  type DeviceFacts,
  isBridgeClass,
  PCI_ADDRESS_PATTERN,
  type PciIdsDatabase,
  type Problem,
  pciClassName,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { linkBasename, parseHexAttr, parseIntAttr, pciAddressesInPath } from './sysfs-values';

export const PCI_DEVICES_DIR = '/sys/bus/pci/devices';

/** What sysfs says about a device; the vfio selection is added by `collectHost`. */
export type PciDeviceFacts = Omit<DeviceFacts, 'vfio' | 'vfioDriver'>;

export interface PciDevicesResult {
  devices: PciDeviceFacts[];
  problems: Problem[];
}

export async function readPciDevices(
  fs: HostFs,
  pciIds: PciIdsDatabase | null,
): Promise<PciDevicesResult> {
  const problems: Problem[] = [];
  const devices: PciDeviceFacts[] = [];
  const entries = await fs.listDir(PCI_DEVICES_DIR);
  if (entries.length === 0) {
    problems.push({
      source: PCI_DEVICES_DIR,
      message: `no PCI devices: ${PCI_DEVICES_DIR} is empty or missing`,
    });
  }
  for (const entry of entries) {
    if (!PCI_ADDRESS_PATTERN.test(entry)) {
      problems.push({
        source: `${PCI_DEVICES_DIR}/${entry}`,
        message: `skipped ${entry}: not a PCI address`,
      });
      continue;
    }
    const result = await readPciDevice(fs, entry, pciIds);
    if (typeof result === 'string') {
      problems.push({ source: `${PCI_DEVICES_DIR}/${entry}`, message: result });
    } else {
      devices.push(result);
    }
  }
  return { devices, problems };
}

/** One device's facts, or why it could not be read. */
async function readPciDevice(
  fs: HostFs,
  address: string,
  pciIds: PciIdsDatabase | null,
): Promise<PciDeviceFacts | string> {
  const dir = `${PCI_DEVICES_DIR}/${address}`;
  const attr = (name: string) => fs.readAttr(`${dir}/${name}`);
  const vendorId = parseHexAttr(await attr('vendor'), 4);
  const deviceId = parseHexAttr(await attr('device'), 4);
  const classCode = parseHexAttr(await attr('class'), 6);
  if (vendorId === null || deviceId === null || classCode === null) {
    return `skipped ${address}: vendor, device or class unreadable`;
  }
  const subsystemVendorId = parseHexAttr(await attr('subsystem_vendor'), 4);
  const subsystemDeviceId = parseHexAttr(await attr('subsystem_device'), 4);

  const driver = linkBasename(await fs.readLink(`${dir}/driver`));
  const override = await attr('driver_override');
  const groupText = linkBasename(await fs.readLink(`${dir}/iommu_group`));
  const iommuGroup = groupText !== null && /^\d+$/.test(groupText) ? Number(groupText) : null;
  const numaNode = parseIntAttr(await attr('numa_node'));
  const resolved = (await fs.resolve(dir)) ?? dir;
  const above = pciAddressesInPath(resolved).filter((a) => a !== address);
  const resetMethod = await attr('reset_method');

  return {
    address,
    vendorId,
    deviceId,
    subsystemVendorId,
    subsystemDeviceId,
    classCode,
    revision: parseHexAttr(await attr('revision'), 2),
    modalias: (await attr('modalias')) || null,
    driver,
    driverModule: driver === null ? null : linkBasename(await fs.readLink(`${dir}/driver/module`)),
    // The kernel prints `(null)` for an unset override.
    driverOverride: override === null || override === '' || override === '(null)' ? null : override,
    iommuGroup,
    numaNode: numaNode === null || numaNode < 0 ? null : numaNode,
    kind: isBridgeClass(classCode) ? 'bridge' : 'endpoint',
    parent: above.at(-1) ?? null,
    sriov: await readSriov(fs, dir),
    physfn: linkBasename(await fs.readLink(`${dir}/physfn`)),
    resetMethods: resetMethod === null ? [] : resetMethod.split(/\s+/).filter((m) => m !== ''),
    // `reset` is write-only: its presence is the fact, reading it would fail.
    resettable: await fs.exists(`${dir}/reset`),
    bootVga: (await attr('boot_vga')) === '1',
    netInterfaces: await readNetInterfaces(fs, dir),
    names: deviceNames(pciIds, {
      vendorId,
      deviceId,
      subsystemVendorId,
      subsystemDeviceId,
      classCode,
    }),
  };
}

async function readSriov(fs: HostFs, dir: string): Promise<PciDeviceFacts['sriov']> {
  const totalVfs = parseIntAttr(await fs.readAttr(`${dir}/sriov_totalvfs`));
  if (totalVfs === null) return null;
  const autoprobe = await fs.readAttr(`${dir}/sriov_drivers_autoprobe`);
  const virtfns = (await fs.listDir(dir))
    .map((name) => /^virtfn(\d+)$/.exec(name))
    .filter((match) => match !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]));
  const vfs: string[] = [];
  for (const match of virtfns) {
    const vf = linkBasename(await fs.readLink(`${dir}/${match[0]}`));
    if (vf !== null && PCI_ADDRESS_PATTERN.test(vf)) vfs.push(vf);
  }
  return {
    totalVfs,
    numVfs: parseIntAttr(await fs.readAttr(`${dir}/sriov_numvfs`)) ?? 0,
    driversAutoprobe: autoprobe === null ? null : autoprobe === '1',
    vfs,
  };
}

/** Netdevs sit in `net/` or, for virtio, one level down in `virtio<N>/net/`. */
async function readNetInterfaces(fs: HostFs, dir: string): Promise<string[]> {
  const names = [...(await fs.listDir(`${dir}/net`))];
  for (const child of await fs.listDir(dir)) {
    if (/^virtio\d+$/.test(child)) names.push(...(await fs.listDir(`${dir}/${child}/net`)));
  }
  return names.sort();
}

function deviceNames(
  pciIds: PciIdsDatabase | null,
  ids: {
    vendorId: string;
    deviceId: string;
    subsystemVendorId: string | null;
    subsystemDeviceId: string | null;
    classCode: string;
  },
): PciDeviceFacts['names'] {
  if (pciIds === null) {
    return { vendor: null, device: null, subsystem: null, className: pciClassName(ids.classCode) };
  }
  const found = pciIds.lookup(ids);
  return { ...found, className: found.className ?? pciClassName(ids.classCode) };
}
