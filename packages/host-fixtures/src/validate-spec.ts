/**
 * Rejects host specs no kernel could produce, before anything is written: a half-built tree that
 * silently lacks a device would make a test pass or fail for the wrong reason.
 */
import type { DeviceSpec, HostSpec } from './host-spec';

const ADDRESS = /^[0-9a-f]{4,8}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/;
const HEX4 = /^[0-9a-f]{4}$/;
const HEX2 = /^[0-9a-f]{2}$/;
const HEX6 = /^[0-9a-f]{6}$/;
/** Names become path components; a `/` or `..` would write outside the object's directory. */
const NAME = /^[A-Za-z0-9_.:+@-]{1,64}$/;

export function isBridgeClass(classCode: string): boolean {
  return classCode.startsWith('0604');
}

export function isVfioDriver(driver: string | null): boolean {
  return driver !== null && /(^|[_-])vfio([_-]|$)/.test(driver);
}

export function validateHostSpec(spec: HostSpec): void {
  const problems: string[] = [];
  const byAddress = new Map<string, DeviceSpec>();
  for (const device of spec.devices) {
    checkDeviceFields(device, problems);
    if (byAddress.has(device.address)) problems.push(`duplicate device address ${device.address}`);
    byAddress.set(device.address, device);
  }
  for (const device of spec.devices) checkDeviceLinks(device, byAddress, spec, problems);
  checkParentCycles(spec.devices, byAddress, problems);
  checkInterfaces(spec.devices, problems);
  checkNames(spec, problems);
  checkRootDisk(spec, byAddress, problems);
  checkDefaultRoute(spec, problems);
  checkProcesses(spec, byAddress, problems);
  if (spec.fbconsole === true && !spec.devices.some((d) => d.bootVga === true)) {
    problems.push('fbconsole is set but no device has bootVga: fbcon needs a boot VGA device');
  }
  if (problems.length > 0) {
    throw new Error(`invalid host spec "${spec.hostname}": ${problems.join('; ')}`);
  }
}

function checkDeviceFields(device: DeviceSpec, problems: string[]): void {
  const at = `device ${device.address}`;
  if (!ADDRESS.test(device.address)) {
    problems.push(`${at}: address is not a canonical PCI address such as 0000:3b:00.1`);
  }
  const hex: Array<[string, string | undefined, RegExp, string]> = [
    ['vendorId', device.vendorId, HEX4, '4'],
    ['deviceId', device.deviceId, HEX4, '4'],
    ['subsystemVendorId', device.subsystemVendorId, HEX4, '4'],
    ['subsystemDeviceId', device.subsystemDeviceId, HEX4, '4'],
    ['classCode', device.classCode, HEX6, '6'],
    ['revision', device.revision, HEX2, '2'],
  ];
  for (const [field, value, pattern, digits] of hex) {
    if (value !== undefined && !pattern.test(value)) {
      problems.push(`${at}: ${field} "${value}" is not ${digits} lowercase hex digits`);
    }
  }
  for (const [field, value] of [
    ['driver', device.driver],
    ['driverModule', device.driverModule],
    ['driverOverride', device.driverOverride],
  ] as const) {
    if (typeof value === 'string' && !NAME.test(value)) {
      problems.push(`${at}: ${field} "${value}" is not a kernel driver or module name`);
    }
  }
  for (const iface of device.netInterfaces ?? []) {
    if (!NAME.test(iface)) problems.push(`${at}: interface name "${iface}" is not valid`);
  }
  const sriov = device.sriov;
  if (sriov !== undefined && (sriov.numVfs < 0 || sriov.numVfs > sriov.totalVfs)) {
    problems.push(`${at}: sriov numVfs ${sriov.numVfs} is outside 0..totalVfs ${sriov.totalVfs}`);
  }
  if (sriov !== undefined && device.physfn !== undefined) {
    problems.push(`${at}: a VF (physfn ${device.physfn}) cannot itself have SR-IOV`);
  }
}

function checkDeviceLinks(
  device: DeviceSpec,
  byAddress: ReadonlyMap<string, DeviceSpec>,
  spec: HostSpec,
  problems: string[],
): void {
  const at = `device ${device.address}`;
  if (device.parent !== undefined) {
    const parent = byAddress.get(device.parent);
    if (parent === undefined) {
      problems.push(`${at}: unknown parent ${device.parent}`);
    } else if (!isBridgeClass(parent.classCode)) {
      problems.push(
        `${at}: parent ${device.parent} is not a PCI bridge (class ${parent.classCode}, expected 0604xx)`,
      );
    }
  }
  if (device.physfn !== undefined) {
    const pf = byAddress.get(device.physfn);
    if (pf === undefined) {
      problems.push(`${at}: VF whose physfn ${device.physfn} is missing`);
    } else if (pf.sriov === undefined) {
      problems.push(`${at}: physfn ${device.physfn} has no sriov capability`);
    }
  }
  if (device.sriov !== undefined) {
    const vfs = spec.devices.filter((d) => d.physfn === device.address).length;
    if (vfs !== device.sriov.numVfs) {
      problems.push(`${at}: sriov numVfs is ${device.sriov.numVfs} but ${vfs} VFs name it physfn`);
    }
  }
}

function checkParentCycles(
  devices: readonly DeviceSpec[],
  byAddress: ReadonlyMap<string, DeviceSpec>,
  problems: string[],
): void {
  for (const device of devices) {
    const seen = new Set<string>([device.address]);
    let parent = device.parent;
    while (parent !== undefined) {
      if (seen.has(parent)) {
        problems.push(`device ${device.address}: parent chain loops through ${parent}`);
        break;
      }
      seen.add(parent);
      parent = byAddress.get(parent)?.parent;
    }
  }
}

function checkInterfaces(devices: readonly DeviceSpec[], problems: string[]): void {
  const owner = new Map<string, string>([['lo', 'the loopback device']]);
  for (const device of devices) {
    for (const iface of device.netInterfaces ?? []) {
      const first = owner.get(iface);
      if (first !== undefined) {
        problems.push(`interface ${iface} of ${device.address} is already on ${first}`);
      }
      owner.set(iface, device.address);
    }
  }
}

function checkNames(spec: HostSpec, problems: string[]): void {
  if (!NAME.test(spec.kernelRelease)) {
    problems.push(`kernelRelease "${spec.kernelRelease}" is not a kernel release name`);
  }
  for (const module of spec.loadedModules) {
    if (!NAME.test(module.name)) problems.push(`module name "${module.name}" is not valid`);
    for (const driver of module.pciDrivers ?? []) {
      if (!NAME.test(driver))
        problems.push(`module ${module.name}: driver "${driver}" is not valid`);
    }
  }
  for (const unit of spec.iommu.units ?? []) {
    if (!NAME.test(unit)) problems.push(`IOMMU unit name "${unit}" is not valid`);
  }
  for (const node of spec.devVfio ?? []) {
    if (!NAME.test(node)) problems.push(`/dev/vfio entry "${node}" is not valid`);
  }
}

/** `nvme0n1`, `sda`, `vda`: the disk kinds whose sysfs placement the builder knows. */
export const DISK_NAME = /^(nvme\d+n\d+|sd[a-z]+|vd[a-z]+)$/;

function checkRootDisk(
  spec: HostSpec,
  byAddress: ReadonlyMap<string, DeviceSpec>,
  problems: string[],
): void {
  const disk = spec.rootDisk;
  if (disk === undefined) return;
  if (!byAddress.has(disk.address)) {
    problems.push(`root disk ${disk.disk} is on missing device ${disk.address}`);
  }
  if (!DISK_NAME.test(disk.disk)) {
    problems.push(`root disk name "${disk.disk}" is not an nvme, sd or vd disk`);
  }
  if (disk.partition !== undefined && partitionNumber(disk.disk, disk.partition) === null) {
    problems.push(`root partition "${disk.partition}" is not a partition of ${disk.disk}`);
  }
  if (!/^\d+:\d+$/.test(disk.majorMinor)) {
    problems.push(`root disk majorMinor "${disk.majorMinor}" is not major:minor`);
  }
}

/** `nvme0n1p2` of `nvme0n1` → 2, `sda2` of `sda` → 2; null when it is not that disk's partition. */
export function partitionNumber(disk: string, partition: string): number | null {
  const separator = /\d$/.test(disk) ? 'p' : '';
  const prefix = `${disk}${separator}`;
  if (!partition.startsWith(prefix)) return null;
  const rest = partition.slice(prefix.length);
  return /^[1-9]\d*$/.test(rest) ? Number(rest) : null;
}

function checkDefaultRoute(spec: HostSpec, problems: string[]): void {
  const route = spec.defaultRoute;
  if (route === undefined) return;
  if (!spec.devices.some((d) => (d.netInterfaces ?? []).includes(route.iface))) {
    problems.push(`default-route iface ${route.iface} is not on any device (netInterfaces)`);
  }
}

/** Pids are unique; an fd naming a device or group names one this host has, on a vfio driver. */
function checkProcesses(
  spec: HostSpec,
  byAddress: ReadonlyMap<string, DeviceSpec>,
  problems: string[],
): void {
  const pids = new Set<number>();
  const onVfio = (d: DeviceSpec | undefined) => d !== undefined && isVfioDriver(d.driver ?? null);
  for (const process of spec.processes ?? []) {
    const at = `process ${process.pid}`;
    if (!Number.isInteger(process.pid) || process.pid < 1)
      problems.push(`${at}: pid is not positive`);
    if (pids.has(process.pid)) problems.push(`duplicate process pid ${process.pid}`);
    pids.add(process.pid);
    for (const fd of process.fds) {
      if ('group' in fd && !spec.devices.some((d) => d.iommuGroup === fd.group)) {
        problems.push(`${at}: fd on /dev/vfio/${fd.group}, a group no device is in`);
      }
      const address = 'device' in fd ? fd.device : 'cdev' in fd ? fd.cdev : null;
      if (address !== null && !onVfio(byAddress.get(address))) {
        problems.push(`${at}: holds ${address}, which is not a device on a vfio driver`);
      }
      if ('cdev' in fd && spec.vfioDeviceCdev !== true) {
        problems.push(`${at}: holds the cdev of ${fd.cdev} but the host has no vfioDeviceCdev`);
      }
    }
  }
}
