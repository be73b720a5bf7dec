/**
 * Reads every PCI function under /sys/bus/pci/devices (formats in docs/host-files.md). Only the
 * identity attributes are required; everything else missing becomes null or empty, because
 * captured snapshots and old kernels lack many files.
 *
 * A function whose identity reads as garbage (a vendor id of "zzz", no class, a modalias that is
 * not one) is not skipped silently: it is returned as unreadable, with what could be read of it,
 * because vfio still moves it with its IOMMU group and readiness must block that group.
 */
import {
  type DeviceFacts,
  isBridgeClass,
  isPciModalias,
  isVfioDriverName,
  kernelNameSchema,
  PCI_ADDRESS_PATTERN,
  type PciIdsDatabase,
  type Problem,
  pciClassName,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { describeStuckWrite, type StuckWrite, stuckWrites } from '../kernel/stuck-writes';
import { linkBasename, parseHexAttr, parseIntAttr, pciAddressesInPath } from './sysfs-values';

export const PCI_DEVICES_DIR = '/sys/bus/pci/devices';

/** What sysfs says about a device; the vfio selection is added by `collectHost`. */
export type PciDeviceFacts = Omit<DeviceFacts, 'vfio' | 'vfioDriver'>;

/** A function whose own files could not be read: what could be, and what was wrong. */
export interface UnreadablePciDevice {
  address: string;
  /** From its iommu_group link (collectHost prefers the iommu_groups listing). */
  iommuGroup: number | null;
  driver: string | null;
  why: string;
}

export interface PciDevicesResult {
  devices: PciDeviceFacts[];
  unreadable: UnreadablePciDevice[];
  problems: Problem[];
}

/**
 * Reads a lock-taking attribute where a block cannot freeze the scan (SysfsKernelIo.readGuarded);
 * rejects when the read is stuck, which the stuck-writes registry then records.
 */
export type LockedAttrReader = (hostPath: string) => Promise<string | null>;

export async function readPciDevices(
  fs: HostFs,
  pciIds: PciIdsDatabase | null,
  lockedRead?: LockedAttrReader,
): Promise<PciDevicesResult> {
  const problems: Problem[] = [];
  const devices: PciDeviceFacts[] = [];
  const unreadable: UnreadablePciDevice[] = [];
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
    // A write blocked in the kernel holds the device lock: reading driver_override or
    // sriov_numvfs would block this scan behind it. Nothing of the device is read until it returns.
    const stuck = stuckWrites.forDevice(fs.root, entry);
    if (stuck !== null) {
      unreadable.push(stuckDevice(entry, stuck));
      continue;
    }
    let result: PciDeviceFacts | UnreadablePciDevice;
    try {
      result = await readPciDevice(fs, entry, pciIds, lockedRead);
    } catch (error) {
      // A guarded read that did not return: the registry has it now.
      const now = stuckWrites.forDevice(fs.root, entry);
      if (now === null) throw error;
      unreadable.push(stuckDevice(entry, now));
      continue;
    }
    if ('why' in result) unreadable.push(result);
    else devices.push(result);
  }
  return { devices, unreadable, problems };
}

function stuckDevice(address: string, stuck: StuckWrite): UnreadablePciDevice {
  return {
    address,
    iommuGroup: null,
    driver: null,
    why: `stuck in the kernel: ${describeStuckWrite(stuck)} has not returned; the agent does not read or write this device until it does`,
  };
}

/** `vendor reads "zzz"`, `class is missing or unreadable`. */
function garbage(name: string, raw: string | null): string {
  return raw === null
    ? `${name} is missing or unreadable`
    : `${name} reads ${JSON.stringify(raw.length > 40 ? `${raw.slice(0, 40)}…` : raw)}`;
}

/** One device's facts, or what could be read of it and why the rest could not. */
async function readPciDevice(
  fs: HostFs,
  address: string,
  pciIds: PciIdsDatabase | null,
  lockedRead: LockedAttrReader | undefined,
): Promise<PciDeviceFacts | UnreadablePciDevice> {
  const dir = `${PCI_DEVICES_DIR}/${address}`;
  const attr = (name: string) => fs.readAttr(`${dir}/${name}`);
  const rawDriver = linkBasename(await fs.readLink(`${dir}/driver`));
  const driver =
    rawDriver !== null && kernelNameSchema.safeParse(rawDriver).success ? rawDriver : null;
  const groupText = linkBasename(await fs.readLink(`${dir}/iommu_group`));
  const iommuGroup = groupText !== null && /^\d+$/.test(groupText) ? Number(groupText) : null;

  const raw = {
    vendor: await attr('vendor'),
    device: await attr('device'),
    class: await attr('class'),
    modalias: await attr('modalias'),
  };
  const vendorId = parseHexAttr(raw.vendor, 4);
  const deviceId = parseHexAttr(raw.device, 4);
  const classCode = parseHexAttr(raw.class, 6);
  // The kernel writes modalias from the same config space ids: one that is not a PCI modalias
  // means the function's files cannot be trusted. (Absent is a state: captures may lack it.)
  const modalias = raw.modalias === null || raw.modalias === '' ? null : raw.modalias;
  const wrong = [
    vendorId === null ? garbage('vendor', raw.vendor) : null,
    deviceId === null ? garbage('device', raw.device) : null,
    classCode === null ? garbage('class', raw.class) : null,
    modalias !== null && !isPciModalias(modalias) ? garbage('modalias', modalias) : null,
  ].filter((w) => w !== null);
  if (vendorId === null || deviceId === null || classCode === null || wrong.length > 0) {
    return { address, iommuGroup, driver, why: wrong.join('; ') };
  }
  const subsystemVendorId = parseHexAttr(await attr('subsystem_vendor'), 4);
  const subsystemDeviceId = parseHexAttr(await attr('subsystem_device'), 4);

  // driver_override and sriov_numvfs take the device lock (drivers/pci/pci-sysfs.c, iov.c), which
  // a blocked write holds: someone's unbind of a held vfio device (vfio-pci's remove waits for the
  // VM), or `echo 0 > sriov_numvfs` on a PF whose VF is held. Those devices are read guarded. The
  // kernel takes the `driver` link down before remove() blocks, so an endpoint on no driver that
  // is still enabled may be one whose unbind is stuck (bridges are enabled for their children).
  const guarded =
    lockedRead !== undefined &&
    (((driver === null ? !isBridgeClass(classCode) : isVfioDriverName(driver)) &&
      (await attr('enable')) === '1') ||
      (await fs.exists(`${dir}/sriov_totalvfs`)));
  const lockedAttr = async (name: string): Promise<string | null> => {
    if (!guarded || lockedRead === undefined) return attr(name);
    try {
      return await lockedRead(`${dir}/${name}`);
    } catch (error) {
      if (stuckWrites.forDevice(fs.root, address) !== null) throw error;
      // The guard itself failed (its child did not start): read as before rather than fail.
      return attr(name);
    }
  };
  const override = await lockedAttr('driver_override');
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
    modalias,
    driver: rawDriver,
    driverModule:
      rawDriver === null ? null : linkBasename(await fs.readLink(`${dir}/driver/module`)),
    // The kernel prints `(null)` for an unset override.
    driverOverride: override === null || override === '' || override === '(null)' ? null : override,
    iommuGroup,
    numaNode: numaNode === null || numaNode < 0 ? null : numaNode,
    kind: isBridgeClass(classCode) ? 'bridge' : 'endpoint',
    parent: above.at(-1) ?? null,
    sriov: await readSriov(fs, dir, lockedAttr),
    physfn: linkBasename(await fs.readLink(`${dir}/physfn`)),
    resetMethods: resetMethod === null ? [] : resetMethod.split(/\s+/).filter((m) => m !== ''),
    // `reset` is write-only: its presence is the fact, reading it would fail.
    resettable: await fs.exists(`${dir}/reset`),
    bootVga: (await attr('boot_vga')) === '1',
    // Set by collectHost from ./read-holders (enable, /proc) and ./read-kept-by.
    inUse: false,
    holder: null,
    keptBy: [],
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

async function readSriov(
  fs: HostFs,
  dir: string,
  lockedAttr: (name: string) => Promise<string | null>,
): Promise<PciDeviceFacts['sriov']> {
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
    numVfs: parseIntAttr(await lockedAttr('sriov_numvfs')) ?? 0,
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
