/**
 * Processes in /proc and what they hold of vfio, and the `enable` attribute that follows from it.
 * Measured on a real 6.1 kernel (shared notes): a vfio device's `enable` reads 1 exactly while a
 * device fd is open; the group fd or a container alone leave it 0. A holder's fd links read
 * `/dev/vfio/<group>`, `/dev/vfio/vfio`, `anon_inode:[vfio-device]` (and on 6.6+ with the device
 * cdev, `/dev/vfio/devices/vfio<N>`).
 */
import type { HostLayout, PlacedDevice } from './build-tree';
import type { ProcessFdSpec, ProcessSpec } from './host-spec';
import type { TreeWriter } from './tree-writer';
import { isVfioDriver } from './validate-spec';

/** The anonymous inode a device fd taken with VFIO_GROUP_GET_DEVICE_FD shows in /proc. */
export const ANON_VFIO_DEVICE = 'anon_inode:[vfio-device]';

/** `vfio<N>` of every device on a vfio driver, when the host has the device cdev. */
export function vfioCdevs(layout: HostLayout): Map<string, string> {
  const cdevs = new Map<string, string>();
  if (layout.spec.vfioDeviceCdev !== true) return cdevs;
  for (const device of layout.devices) {
    if (isVfioDriver(device.driver)) cdevs.set(device.spec.address, `vfio${cdevs.size}`);
  }
  return cdevs;
}

/** Addresses some process holds a device fd of (anonymous or cdev). */
export function heldAddresses(processes: readonly ProcessSpec[]): Set<string> {
  const held = new Set<string>();
  for (const process of processes) {
    for (const fd of process.fds) {
      if ('device' in fd) held.add(fd.device);
      else if ('cdev' in fd) held.add(fd.cdev);
    }
  }
  return held;
}

/** What `enable` reads for a device (DeviceSpec.enable documents the default). */
export function deviceEnabled(layout: HostLayout, device: PlacedDevice): boolean {
  if (device.spec.enable !== undefined) return device.spec.enable;
  if (device.driver === null) return false;
  if (!isVfioDriver(device.driver)) return true;
  return heldAddresses(layout.spec.processes ?? []).has(device.spec.address);
}

function fdTarget(fd: ProcessFdSpec, cdevs: ReadonlyMap<string, string>): string {
  if ('group' in fd) return `/dev/vfio/${fd.group}`;
  if ('container' in fd) return '/dev/vfio/vfio';
  if ('device' in fd) return ANON_VFIO_DEVICE;
  if ('cdev' in fd) return `/dev/vfio/devices/${cdevs.get(fd.cdev) ?? 'vfio-missing'}`;
  return fd.target;
}

/** `/proc/<pid>/{comm,cmdline,fd/}` of every process, and the device cdevs. */
export async function writeProcesses(out: TreeWriter, layout: HostLayout): Promise<void> {
  const cdevs = vfioCdevs(layout);
  for (const [address, cdev] of cdevs) {
    const device = layout.byAddress.get(address);
    if (device === undefined) continue;
    await out.attr(`${device.path}/vfio-dev/${cdev}/dev`, `511:${cdev.slice(4)}`);
    await out.file(`dev/vfio/devices/${cdev}`, '');
  }
  for (const process of layout.spec.processes ?? []) {
    const dir = `proc/${process.pid}`;
    await out.dir(`${dir}/fd`);
    if (process.comm !== undefined) await out.attr(`${dir}/comm`, process.comm);
    if (process.cmdline !== undefined) {
      await out.file(`${dir}/cmdline`, process.cmdline.map((arg) => `${arg}\0`).join(''));
    }
    for (const fd of [0, 1, 2]) await out.rawLink(`${dir}/fd/${fd}`, '/dev/null');
    for (const [index, fd] of process.fds.entries()) {
      await out.rawLink(`${dir}/fd/${index + 3}`, fdTarget(fd, cdevs));
    }
  }
}
