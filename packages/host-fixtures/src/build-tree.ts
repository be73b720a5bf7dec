/**
 * Writes a host's sysfs/procfs tree under a root directory from a HostSpec, in the real kernel's
 * layout (docs/host-files.md): PCI devices nested under their bridges in sys/devices, and every
 * other view (bus/pci, iommu_groups, class/net, dev/block...) as relative links into them.
 *
 * One writer per kernel object, each taking the already-resolved layout, so the driver-core model
 * of the next milestone can reuse them to re-create a driver directory or a device's `driver`
 * link after a bind/unbind. The mapping is deterministic: the same spec always gives the same
 * tree (generated indices follow spec order, listings are sorted).
 */
import { deviceEnabled, writeProcesses } from './build-processes';
import type { CpuVendor, DeviceSpec, HostSpec } from './host-spec';
import { routingId } from './pci-routing';
import {
  cpuinfoText,
  interruptsText,
  ipv6RouteText,
  type MsiSource,
  mountinfoText,
  mountsText,
  type RootMount,
  routeText,
} from './proc-text';
import { TreeWriter } from './tree-writer';
import {
  DISK_NAME,
  isBridgeClass,
  isVfioDriver,
  partitionNumber,
  validateHostSpec,
} from './validate-spec';

export const PCI_DRIVERS_DIR = 'sys/bus/pci/drivers';
export const PCI_BUS_DEVICES_DIR = 'sys/bus/pci/devices';
export const IOMMU_GROUPS_DIR = 'sys/kernel/iommu_groups';
export const MODULES_DIR = 'sys/module';

/** A device with every default applied and its place in sys/devices worked out. */
export interface PlacedDevice {
  spec: DeviceSpec;
  /** Root-relative directory, e.g. `sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0`. */
  path: string;
  driver: string | null;
  /** Module providing `driver`; null when built in or unbound. */
  driverModule: string | null;
  /** Null when unset or when the IOMMU is off. */
  iommuGroup: number | null;
  resetMethods: string[];
  resettable: boolean;
}

/** Everything derived from a spec before writing: what the writers share. */
export interface HostLayout {
  spec: HostSpec;
  devices: PlacedDevice[];
  byAddress: ReadonlyMap<string, PlacedDevice>;
  /** PCI driver name → module (null = built in). Bound drivers and drivers modules register. */
  drivers: ReadonlyMap<string, string | null>;
  /** Module name → PCI drivers it registers. */
  modules: ReadonlyMap<string, string[]>;
  iommuUnits: string[];
  interruptRemapping: boolean;
}

export async function buildHostTree(root: string, spec: HostSpec): Promise<void> {
  validateHostSpec(spec);
  const layout = planHostLayout(spec);
  const out = new TreeWriter(root);

  await writePciBus(out);
  for (const device of layout.devices) await writePciDevice(out, layout, device);
  for (const [driver, module] of layout.drivers) {
    const bound = layout.devices.filter((d) => d.driver === driver);
    await writePciDriver(out, driver, module, bound);
  }
  for (const [module, drivers] of layout.modules) await writeModule(out, module, drivers);
  await writeIommu(out, layout);
  await writeKernelFiles(out, layout);
  await writeRootDisk(out, layout);
  await writeNetwork(out, layout);
  await writeConsoles(out, layout);
  await writeDevVfio(out, layout);
  await writeProcesses(out, layout);
}

// ---------------------------------------------------------------------------------------------
// Layout: the spec with defaults applied. Pure, so tests and the driver-core model can use it.

export function planHostLayout(spec: HostSpec): HostLayout {
  const specs = new Map(spec.devices.map((d) => [d.address, d]));
  const paths = new Map<string, string>();
  const pathOf = (device: DeviceSpec): string => {
    const known = paths.get(device.address);
    if (known !== undefined) return known;
    const parent = effectiveParent(device, specs);
    const parentSpec = parent === undefined ? undefined : specs.get(parent);
    const dir =
      parentSpec === undefined
        ? `sys/devices/${rootBusDir(device, specs)}/${device.address}`
        : `${pathOf(parentSpec)}/${device.address}`;
    paths.set(device.address, dir);
    return dir;
  };

  const devices = spec.devices.map((device): PlacedDevice => {
    const driver = device.driver ?? null;
    const resetMethods = device.resetMethods ?? defaultResetMethods(device);
    return {
      spec: device,
      path: pathOf(device),
      driver,
      driverModule:
        driver === null
          ? null
          : device.driverModule === undefined
            ? driver.replaceAll('-', '_')
            : device.driverModule,
      iommuGroup: spec.iommu.enabled ? (device.iommuGroup ?? null) : null,
      resetMethods,
      resettable: device.resettable ?? resetMethods.length > 0,
    };
  });

  const drivers = new Map<string, string | null>();
  const modules = new Map<string, string[]>();
  const register = (module: string | null, driver: string, origin: string) => {
    const known = drivers.get(driver);
    if (known !== undefined && known !== module) {
      throw new Error(
        `invalid host spec "${spec.hostname}": driver ${driver} comes from ${known ?? 'the kernel (built in)'} and from ${module ?? 'the kernel (built in)'} (${origin})`,
      );
    }
    drivers.set(driver, module);
    if (module === null) return;
    const list = modules.get(module) ?? [];
    if (!list.includes(driver)) list.push(driver);
    modules.set(module, list);
  };
  for (const module of spec.loadedModules) {
    if (!modules.has(module.name)) modules.set(module.name, []);
    for (const driver of module.pciDrivers ?? [])
      register(module.name, driver, `module ${module.name}`);
  }
  for (const device of devices) {
    if (device.driver !== null) {
      register(device.driverModule, device.driver, `device ${device.spec.address}`);
    }
  }

  return {
    spec,
    devices,
    byAddress: new Map(devices.map((d) => [d.spec.address, d])),
    drivers: new Map([...drivers].sort(([a], [b]) => a.localeCompare(b))),
    modules: new Map([...modules].sort(([a], [b]) => a.localeCompare(b))),
    iommuUnits: spec.iommu.enabled ? (spec.iommu.units ?? [defaultIommuUnit(spec.cpuVendor)]) : [],
    interruptRemapping: spec.iommu.enabled && (spec.iommu.interruptRemapping ?? true),
  };
}

/** The kernel adds VFs to their PF's bus, so by default a VF sits beside its PF. */
function effectiveParent(
  device: DeviceSpec,
  specs: ReadonlyMap<string, DeviceSpec>,
): string | undefined {
  if (device.parent !== undefined) return device.parent;
  const pf = device.physfn === undefined ? undefined : specs.get(device.physfn);
  return pf === undefined ? undefined : effectiveParent(pf, specs);
}

/** `pci0000:00`: the host bridge's directory for a device directly on a root bus. */
function rootBusDir(device: DeviceSpec, specs: ReadonlyMap<string, DeviceSpec>): string {
  const pf = device.physfn === undefined ? undefined : specs.get(device.physfn);
  const address = pf?.address ?? device.address;
  const [domain = '0000', bus = '00'] = address.split(':');
  return `pci${domain}:${bus}`;
}

function defaultResetMethods(device: DeviceSpec): string[] {
  if (isBridgeClass(device.classCode)) return [];
  // A VF has no secondary bus to reset; FLR is its only reset.
  return device.physfn === undefined ? ['flr', 'bus'] : ['flr'];
}

function defaultIommuUnit(vendor: CpuVendor): string {
  if (vendor === 'intel') return 'dmar0';
  if (vendor === 'amd') return 'ivhd0';
  return 'smmu3.0x0000000009050000';
}

export { isVfioDriver } from './validate-spec';

// ---------------------------------------------------------------------------------------------
// PCI devices, drivers and modules.

/** `pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X`, as pci_uevent / modalias_show print it. */
export function pciModalias(device: DeviceSpec): string {
  const hex = (value: string, width: number) => value.toUpperCase().padStart(width, '0');
  const cls = device.classCode;
  return (
    `pci:v${hex(device.vendorId, 8)}d${hex(device.deviceId, 8)}` +
    `sv${hex(device.subsystemVendorId ?? '0000', 8)}sd${hex(device.subsystemDeviceId ?? '0000', 8)}` +
    `bc${hex(cls.slice(0, 2), 2)}sc${hex(cls.slice(2, 4), 2)}i${hex(cls.slice(4, 6), 2)}`
  );
}

async function writePciBus(out: TreeWriter): Promise<void> {
  await out.dir(PCI_BUS_DEVICES_DIR);
  await out.dir(PCI_DRIVERS_DIR);
  // Write-only triggers in the kernel; empty files here so writes to them succeed.
  await out.file('sys/bus/pci/drivers_probe', '');
  await out.file('sys/bus/pci/rescan', '');
  await out.attr('sys/bus/pci/drivers_autoprobe', 1);
}

/** One PCI function: its sysfs directory, its bus/pci/devices link and its outgoing links. */
export async function writePciDevice(
  out: TreeWriter,
  layout: HostLayout,
  device: PlacedDevice,
): Promise<void> {
  const { spec } = device;
  const dir = device.path;
  const hex = (value: string) => `0x${value}`;
  await out.attr(`${dir}/vendor`, hex(spec.vendorId));
  await out.attr(`${dir}/device`, hex(spec.deviceId));
  await out.attr(`${dir}/subsystem_vendor`, hex(spec.subsystemVendorId ?? '0000'));
  await out.attr(`${dir}/subsystem_device`, hex(spec.subsystemDeviceId ?? '0000'));
  await out.attr(`${dir}/class`, hex(spec.classCode));
  await out.attr(`${dir}/revision`, hex(spec.revision ?? '00'));
  await out.attr(`${dir}/modalias`, pciModalias(spec));
  await out.attr(`${dir}/driver_override`, spec.driverOverride ?? '(null)');
  await out.attr(`${dir}/numa_node`, spec.numaNode ?? -1);
  await out.attr(`${dir}/enable`, deviceEnabled(layout, device) ? 1 : 0);
  await out.file(`${dir}/uevent`, pciUevent(device));
  // Write-only attributes: present so writes succeed, empty because reading them fails.
  await out.file(`${dir}/remove`, '');
  await out.file(`${dir}/rescan`, '');
  if (device.resetMethods.length > 0) {
    await out.attr(`${dir}/reset_method`, device.resetMethods.join(' '));
  }
  if (device.resettable) await out.file(`${dir}/reset`, '');
  if (spec.classCode.startsWith('0300')) await out.attr(`${dir}/boot_vga`, spec.bootVga ? 1 : 0);
  await out.link(`${dir}/subsystem`, 'sys/bus/pci');
  await out.link(`${PCI_BUS_DEVICES_DIR}/${spec.address}`, dir);
  if (device.driver !== null)
    await out.link(`${dir}/driver`, `${PCI_DRIVERS_DIR}/${device.driver}`);
  if (device.iommuGroup !== null) {
    await out.link(`${dir}/iommu_group`, `${IOMMU_GROUPS_DIR}/${device.iommuGroup}`);
  }
  await writeSriov(out, layout, device);
}

/** The uevent a device carries (pci_uevent): what udev and modprobe see. */
function pciUevent(device: PlacedDevice): string {
  const { spec } = device;
  const up = (value: string) => value.toUpperCase();
  const lines = [
    ...(device.driver === null ? [] : [`DRIVER=${device.driver}`]),
    `PCI_CLASS=${up(Number.parseInt(spec.classCode, 16).toString(16).padStart(4, '0'))}`,
    `PCI_ID=${up(spec.vendorId)}:${up(spec.deviceId)}`,
    `PCI_SUBSYS_ID=${up(spec.subsystemVendorId ?? '0000')}:${up(spec.subsystemDeviceId ?? '0000')}`,
    `PCI_SLOT_NAME=${spec.address}`,
    `MODALIAS=${pciModalias(spec)}`,
  ];
  return `${lines.join('\n')}\n`;
}

/** PF attributes and `virtfn<N>` links, or a VF's `physfn` link. */
async function writeSriov(
  out: TreeWriter,
  layout: HostLayout,
  device: PlacedDevice,
): Promise<void> {
  const { spec } = device;
  if (spec.physfn !== undefined) {
    const pf = layout.byAddress.get(spec.physfn);
    if (pf !== undefined) await out.link(`${device.path}/physfn`, pf.path);
  }
  if (spec.sriov === undefined) return;
  await out.attr(`${device.path}/sriov_totalvfs`, spec.sriov.totalVfs);
  await out.attr(`${device.path}/sriov_numvfs`, spec.sriov.numVfs);
  await out.attr(
    `${device.path}/sriov_drivers_autoprobe`,
    spec.sriov.driversAutoprobe === false ? 0 : 1,
  );
  // Function order is VF index order: the kernel numbers VFs by routing ID (offset + n*stride).
  const vfs = layout.devices
    .filter((d) => d.spec.physfn === spec.address)
    .sort((a, b) => a.spec.address.localeCompare(b.spec.address));
  const [first, second] = vfs;
  const pfRid = routingId(spec.address);
  const offset =
    spec.sriov.offset ?? (first === undefined ? 1 : routingId(first.spec.address) - pfRid);
  const stride =
    spec.sriov.stride ??
    (first === undefined || second === undefined
      ? 1
      : routingId(second.spec.address) - routingId(first.spec.address));
  await out.attr(`${device.path}/sriov_offset`, offset);
  await out.attr(`${device.path}/sriov_stride`, stride);
  // iov.c prints vf_device with %x, as read from the capability whether VFs are enabled or not.
  await out.attr(
    `${device.path}/sriov_vf_device`,
    spec.sriov.vfDeviceId ?? first?.spec.deviceId ?? spec.deviceId,
  );
  for (const [index, vf] of vfs.entries()) await out.link(`${device.path}/virtfn${index}`, vf.path);
}

/** `sys/bus/pci/drivers/<drv>/`: control files, links to bound devices, and `module`. */
export async function writePciDriver(
  out: TreeWriter,
  driver: string,
  module: string | null,
  bound: readonly PlacedDevice[],
): Promise<void> {
  const dir = `${PCI_DRIVERS_DIR}/${driver}`;
  for (const control of ['bind', 'unbind', 'new_id', 'remove_id', 'uevent']) {
    await out.file(`${dir}/${control}`, '');
  }
  for (const device of bound) await out.link(`${dir}/${device.spec.address}`, device.path);
  if (module !== null) await out.link(`${dir}/module`, `${MODULES_DIR}/${module}`);
}

/** `sys/module/<mod>/` with `drivers/pci:<drv>` links back to the drivers it registered. */
export async function writeModule(
  out: TreeWriter,
  module: string,
  pciDrivers: readonly string[],
): Promise<void> {
  const dir = `${MODULES_DIR}/${module}`;
  await out.attr(`${dir}/initstate`, 'live');
  await out.attr(`${dir}/refcnt`, 0);
  for (const driver of pciDrivers) {
    await out.link(`${dir}/drivers/pci:${driver}`, `${PCI_DRIVERS_DIR}/${driver}`);
  }
}

// ---------------------------------------------------------------------------------------------
// IOMMU.

async function writeIommu(out: TreeWriter, layout: HostLayout): Promise<void> {
  // Both directories exist with the IOMMU off too; they are just empty.
  await out.dir(IOMMU_GROUPS_DIR);
  await out.dir('sys/class/iommu');
  const groups = new Map<number, PlacedDevice[]>();
  for (const device of layout.devices) {
    if (device.iommuGroup === null) continue;
    groups.set(device.iommuGroup, [...(groups.get(device.iommuGroup) ?? []), device]);
  }
  const type = groupType(layout.spec);
  for (const [group, members] of [...groups].sort(([a], [b]) => a - b)) {
    await writeIommuGroup(out, group, type, layout.spec.cpuVendor, members);
  }
  for (const unit of layout.iommuUnits) await writeIommuUnit(out, unit);
}

/** `iommu=pt` / `iommu.passthrough=1` give every default domain the identity type. */
function groupType(spec: HostSpec): 'DMA' | 'identity' {
  const params = spec.cmdline.split(/\s+/);
  return params.includes('iommu=pt') || params.includes('iommu.passthrough=1') ? 'identity' : 'DMA';
}

export async function writeIommuGroup(
  out: TreeWriter,
  group: number,
  type: 'DMA' | 'identity',
  vendor: CpuVendor,
  members: readonly PlacedDevice[],
): Promise<void> {
  const dir = `${IOMMU_GROUPS_DIR}/${group}`;
  await out.attr(`${dir}/type`, type);
  // x86 reserves the MSI doorbell window in every group; Arm's SMMU reserves its own MSI window.
  await out.file(
    `${dir}/reserved_regions`,
    vendor === 'arm'
      ? '0x0000000008000000 0x00000000080fffff msi\n'
      : '0x00000000fee00000 0x00000000feefffff msi\n',
  );
  await out.dir(`${dir}/devices`);
  for (const device of members)
    await out.link(`${dir}/devices/${device.spec.address}`, device.path);
}

/** `sys/class/iommu/<unit>` → the unit's device under devices/virtual/iommu. */
async function writeIommuUnit(out: TreeWriter, unit: string): Promise<void> {
  const target = `sys/devices/virtual/iommu/${unit}`;
  await out.dir(`${target}/devices`);
  await out.link(`sys/class/iommu/${unit}`, target);
}

// ---------------------------------------------------------------------------------------------
// Kernel, identity and modules.alias.

async function writeKernelFiles(out: TreeWriter, layout: HostLayout): Promise<void> {
  const { spec } = layout;
  await out.attr('proc/cmdline', spec.cmdline);
  await out.attr('proc/sys/kernel/osrelease', spec.kernelRelease);
  await out.attr('proc/sys/kernel/hostname', spec.hostname);
  await out.attr('etc/hostname', spec.hostname);
  await out.attr('etc/machine-id', spec.machineId);
  await out.file('proc/cpuinfo', cpuinfoText(spec.cpuVendor, spec.virtualMachine === true));
  await out.file(
    'proc/interrupts',
    interruptsText(
      spec.cpuVendor,
      layout.interruptRemapping,
      layout.iommuUnits,
      msiSources(layout),
    ),
  );
  await out.dir(MODULES_DIR);
  if (spec.modulesAlias !== null) {
    await out.file(`lib/modules/${spec.kernelRelease}/modules.alias`, spec.modulesAlias);
  }
}

/** Devices whose driver holds interrupts; vfio requests none until a VM opens the device. */
function msiSources(layout: HostLayout): MsiSource[] {
  const sources: MsiSource[] = [];
  let nvme = 0;
  for (const device of layout.devices) {
    const { driver } = device;
    if (driver === null || isVfioDriver(driver)) continue;
    const address = device.spec.address;
    if (driver === 'pcieport') sources.push({ address, name: 'PCIe PME, aerdrv' });
    else if (driver === 'nvme') sources.push({ address, name: `nvme${nvme++}q0` });
    else sources.push({ address, name: `${driver}@pci:${address}` });
  }
  return sources;
}

// ---------------------------------------------------------------------------------------------
// Root disk.

/** Where a disk's directory sits under its controller, as each block driver registers it. */
function diskDirUnder(controllerPath: string, disk: string): string {
  const nvme = /^(nvme\d+)n\d+$/.exec(disk);
  if (nvme?.[1] !== undefined) return `${controllerPath}/nvme/${nvme[1]}/${disk}`;
  const letter = (/^[sv]d([a-z])/.exec(disk)?.[1] ?? 'a').charCodeAt(0) - 'a'.charCodeAt(0);
  if (disk.startsWith('vd')) return `${controllerPath}/virtio${letter}/block/${disk}`;
  // libata: one port (ataN), one SCSI host per port, target and LUN 0.
  return `${controllerPath}/ata${letter + 1}/host${letter}/target${letter}:0:0/${letter}:0:0:0/block/${disk}`;
}

async function writeRootDisk(out: TreeWriter, layout: HostLayout): Promise<void> {
  await out.dir('sys/dev/block');
  await out.dir('sys/class/block');
  await out.dir('sys/block');
  const rootMount = rootMountOf(layout.spec);
  await out.file('proc/self/mountinfo', mountinfoText(rootMount));
  await out.file('proc/mounts', mountsText(rootMount));
  await out.file('proc/self/mounts', mountsText(rootMount));

  const disk = layout.spec.rootDisk;
  const controller = disk === undefined ? undefined : layout.byAddress.get(disk.address);
  if (disk === undefined || controller === undefined || !DISK_NAME.test(disk.disk)) return;
  const [major = '0', minor = '0'] = disk.majorMinor.split(':');
  const partNo = disk.partition === undefined ? null : partitionNumber(disk.disk, disk.partition);
  // Partitions take the minors right after their disk's (sda2 = 8:2 when sda = 8:0).
  const diskDevt = partNo === null ? disk.majorMinor : `${major}:${Number(minor) - partNo}`;
  const nvme = /^(nvme\d+)n(\d+)$/.exec(disk.disk);
  let diskDir = diskDirUnder(controller.path, disk.disk);
  if (disk.nvmeMultipath === true && nvme?.[1] !== undefined && nvme[2] !== undefined) {
    // Native multipath: the namespace head lives in the subsystem; each controller's path to it
    // is a hidden `nvmeXcYnZ` disk under the controller, linked from the head's `multipath/`.
    const subsystem = 'sys/devices/virtual/nvme-subsystem/nvme-subsys0';
    const ctrlDir = `${controller.path}/nvme/${nvme[1]}`;
    const pathDisk = `${nvme[1]}c0n${nvme[2]}`;
    diskDir = `${subsystem}/${disk.disk}`;
    await out.attr(`${ctrlDir}/${pathDisk}/hidden`, 1);
    await out.link(`${subsystem}/${nvme[1]}`, ctrlDir);
    await out.link(`${diskDir}/multipath/${pathDisk}`, `${ctrlDir}/${pathDisk}`);
  }
  await writeBlockDevice(out, disk.disk, diskDir, diskDevt);
  await out.link(`sys/block/${disk.disk}`, diskDir);
  if (disk.partition !== undefined && partNo !== null) {
    const partDir = `${diskDir}/${disk.partition}`;
    await writeBlockDevice(out, disk.partition, partDir, disk.majorMinor);
    await out.attr(`${partDir}/partition`, partNo);
  }
}

/** One block device directory, with its `dev` number and class/dev-number links. */
async function writeBlockDevice(
  out: TreeWriter,
  name: string,
  dir: string,
  devt: string,
): Promise<void> {
  await out.attr(`${dir}/dev`, devt);
  await out.file(
    `${dir}/uevent`,
    `MAJOR=${devt.split(':')[0]}\nMINOR=${devt.split(':')[1]}\nDEVNAME=${name}\n`,
  );
  await out.link(`sys/class/block/${name}`, dir);
  await out.link(`sys/dev/block/${devt}`, dir);
}

function rootMountOf(spec: HostSpec): RootMount | null {
  const disk = spec.rootDisk;
  if (disk === undefined) return null;
  return { majorMinor: disk.majorMinor, source: `/dev/${disk.partition ?? disk.disk}` };
}

// ---------------------------------------------------------------------------------------------
// Network.

async function writeNetwork(out: TreeWriter, layout: HostLayout): Promise<void> {
  await out.dir('sys/class/net');
  let ifindex = 1;
  await writeNetdev(out, 'lo', 'sys/devices/virtual/net/lo', null, ifindex++);
  let virtioIndex = 0;
  for (const device of layout.devices) {
    const names = device.spec.netInterfaces ?? [];
    if (names.length === 0) continue;
    // virtio-pci registers a virtio<N> device under the PCI function; the netdev hangs off it.
    const owner =
      device.spec.virtioNet === true ? `${device.path}/virtio${virtioIndex++}` : device.path;
    for (const name of names)
      await writeNetdev(out, name, `${owner}/net/${name}`, owner, ifindex++);
  }
  const route = layout.spec.defaultRoute;
  await out.file('proc/net/route', routeText(route?.iface ?? null));
  await out.file('proc/net/ipv6_route', ipv6RouteText(route?.iface ?? null, route?.ipv6 === true));
}

/** A netdev's directory, its `device` link to the owning device and its class/net link. */
async function writeNetdev(
  out: TreeWriter,
  name: string,
  dir: string,
  owner: string | null,
  ifindex: number,
): Promise<void> {
  await out.attr(`${dir}/ifindex`, ifindex);
  await out.attr(`${dir}/operstate`, name === 'lo' ? 'unknown' : 'up');
  if (owner !== null) await out.link(`${dir}/device`, owner);
  await out.link(`sys/class/net/${name}`, dir);
}

// ---------------------------------------------------------------------------------------------
// Console and /dev/vfio.

async function writeConsoles(out: TreeWriter, layout: HostLayout): Promise<void> {
  const fbcon = layout.spec.fbconsole === true;
  // The dummy console is always vtcon0; fbcon takes over as vtcon1 when a framebuffer appears.
  await writeVtconsole(out, 0, '(S) dummy device', !fbcon);
  await out.dir('sys/class/graphics');
  if (!fbcon) return;
  await writeVtconsole(out, 1, '(M) frame buffer device', true);
  const vga = layout.devices.find((d) => d.spec.bootVga === true);
  if (vga === undefined) return;
  const fbDir = `${vga.path}/graphics/fb0`;
  await out.link(`${fbDir}/device`, vga.path);
  await out.link('sys/class/graphics/fb0', fbDir);
}

async function writeVtconsole(
  out: TreeWriter,
  index: number,
  name: string,
  bound: boolean,
): Promise<void> {
  const dir = `sys/devices/virtual/vtconsole/vtcon${index}`;
  await out.attr(`${dir}/name`, name);
  await out.attr(`${dir}/bind`, bound ? 1 : 0);
  await out.link(`sys/class/vtconsole/vtcon${index}`, dir);
}

async function writeDevVfio(out: TreeWriter, layout: HostLayout): Promise<void> {
  const nodes = layout.spec.devVfio ?? defaultDevVfio(layout);
  if (nodes.length === 0) return;
  for (const node of nodes) await out.file(`dev/vfio/${node}`, '');
}

function defaultDevVfio(layout: HostLayout): string[] {
  const bound = layout.devices.filter((d) => isVfioDriver(d.driver));
  if (bound.length === 0 && !layout.modules.has('vfio')) return [];
  const groups = new Set<number>();
  for (const device of bound) if (device.iommuGroup !== null) groups.add(device.iommuGroup);
  return ['vfio', ...[...groups].sort((a, b) => a - b).map(String)];
}
