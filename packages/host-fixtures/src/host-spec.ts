/**
 * A declarative description of one Linux host as the agent sees it: identity, kernel, IOMMU and
 * the PCI tree. `buildHostTree` turns it into the sysfs/procfs files of docs/host-files.md.
 * Ids are lowercase hex without `0x`, exactly as core's inventory schema holds them, so a spec
 * and the inventory the agent reads back from its tree compare field by field.
 */

export type CpuVendor = 'intel' | 'amd' | 'arm';

export interface HostSpec {
  hostname: string;
  machineId: string;
  /** `/proc/sys/kernel/osrelease`; also names `/lib/modules/<release>/`. */
  kernelRelease: string;
  cpuVendor: CpuVendor;
  /** Adds the `hypervisor` cpuinfo flag (x86 only: Arm's cpuinfo has no such flag). */
  virtualMachine?: boolean;
  /** `/proc/cmdline`, without the trailing newline. */
  cmdline: string;
  iommu: {
    enabled: boolean;
    /** `/sys/class/iommu` entries; default per vendor: dmar0 / ivhd0 / smmu3.0x0000000009050000. */
    units?: string[];
    /** `IR-` irq chips in /proc/interrupts; default true when the IOMMU is enabled. */
    interruptRemapping?: boolean;
  };
  /** Full text of `/lib/modules/<release>/modules.alias`; null leaves the file absent. */
  modulesAlias: string | null;
  /**
   * `/sys/module/<name>[/drivers/pci:<drv>]`. The module of every bound modular driver is added
   * (with its `pci:<drv>` link) even when not listed: the kernel cannot bind a driver whose
   * module is not loaded.
   */
  loadedModules: Array<{ name: string; pciDrivers?: string[] }>;
  devices: DeviceSpec[];
  rootDisk?: {
    /** PCI address of the disk's controller (NVMe, AHCI, virtio-blk). */
    address: string;
    /** Whole disk: `nvme0n1`, `sda`, `vda`. */
    disk: string;
    /** Partition holding `/`, e.g. `nvme0n1p2`; absent when `/` is the whole disk. */
    partition?: string;
    /** `major:minor` of the block device mounted on `/` (the partition when there is one). */
    majorMinor: string;
    /**
     * NVMe only: lay the namespace out as native NVMe multipath does (CONFIG_NVME_MULTIPATH=y, the
     * Debian default): under `devices/virtual/nvme-subsystem/nvme-subsys0/`, not under the controller.
     */
    nvmeMultipath?: boolean;
  };
  /**
   * Interface carrying the IPv4 default route; `ipv6: true` also gives it an IPv6 default route
   * (`::/0`), as on a dual-stack host.
   */
  defaultRoute?: { iface: string; ipv6?: boolean };
  /** The console is fbcon on the boot VGA device: vtcon1 is a bound `frame buffer device`. */
  fbconsole?: boolean;
  /**
   * `/dev/vfio` entries. Default: none unless vfio is in use (a `vfio` module loaded or a device
   * bound to a vfio driver); then `vfio` plus, when the IOMMU is on, the group of every device
   * bound to a vfio driver.
   */
  devVfio?: string[];
  /**
   * A 6.6+ kernel with CONFIG_VFIO_DEVICE_CDEV: every device on a vfio driver has
   * `vfio-dev/vfio<N>` and `/dev/vfio/devices/vfio<N>`, N counting those devices in spec order.
   */
  vfioDeviceCdev?: boolean;
  /** Processes in `/proc/<pid>/` (`comm`, `cmdline`, `fd/`): VMs holding vfio devices, others. */
  processes?: ProcessSpec[];
}

/** One open file of a process, as its `/proc/<pid>/fd/<n>` link reads. */
export type ProcessFdSpec =
  /** `/dev/vfio/<group>`: the group alone does not hold a device (its `enable` stays 0). */
  | { group: number }
  /** `/dev/vfio/vfio`: a container. */
  | { container: true }
  /** `anon_inode:[vfio-device]`, a device fd taken from its group: holds the device. */
  | { device: string }
  /** `/dev/vfio/devices/vfio<N>` of this device (needs vfioDeviceCdev): holds it. */
  | { cdev: string }
  /** Anything else, verbatim (`/dev/null`, `socket:[1234]`). */
  | { target: string };

export interface ProcessSpec {
  pid: number;
  /** `/proc/<pid>/comm`; absent leaves the file out (a process that exited mid-scan). */
  comm?: string;
  /** argv; written NUL-separated with a trailing NUL. Absent leaves `cmdline` out. */
  cmdline?: string[];
  /** Numbered from 3 (0-2 are /dev/null). */
  fds: ProcessFdSpec[];
}

export interface DeviceSpec {
  /** Canonical address `0000:3b:00.1`. */
  address: string;
  vendorId: string;
  deviceId: string;
  /** Default `0000` (what bridges without a subsystem id report). */
  subsystemVendorId?: string;
  subsystemDeviceId?: string;
  /** 6 hex digits: base class, subclass, programming interface. */
  classCode: string;
  /** 2 hex digits, default `00`. */
  revision?: string;
  /** Bound PCI driver name (`vfio-pci`, `nvidia`, `pcieport`); null/absent = unbound. */
  driver?: string | null;
  /** Module providing the driver; default = driver name with `-` → `_`; null = built in. */
  driverModule?: string | null;
  driverOverride?: string | null;
  /** Ignored when the IOMMU is off; null/absent = no group link. */
  iommuGroup?: number | null;
  /** Default -1 (no NUMA affinity). */
  numaNode?: number;
  /**
   * Upstream bridge address. Default: a VF sits next to its PF (the kernel adds VFs to the PF's
   * bus); anything else sits on the root bus `pci<domain>:<bus>` of its own address.
   */
  parent?: string;
  sriov?: {
    totalVfs: number;
    numVfs: number;
    driversAutoprobe?: boolean;
    /**
     * `sriov_offset` / `sriov_stride`: VF n's routing id is the PF's + offset + n * stride.
     * Default: what the spec's VFs show (the first VF's distance, the step to the second), else 1.
     */
    offset?: number;
    stride?: number;
    /** `sriov_vf_device`, the id every VF gets; default the first VF's deviceId, else the PF's. */
    vfDeviceId?: string;
  };
  /** PF address: makes this device a VF. */
  physfn?: string;
  /** Default: `flr bus` for endpoints, `flr` for VFs (no bus of their own), none for bridges. */
  resetMethods?: string[];
  /** Whether the write-only `reset` attribute exists; default resetMethods.length > 0. */
  resettable?: boolean;
  /** Only written for VGA class 0300xx. */
  bootVga?: boolean;
  netInterfaces?: string[];
  /** Put the netdevs under `virtio<N>/net/` like virtio-pci does. */
  virtioNet?: boolean;
  /**
   * `enable` (enable_cnt > 0). Default: 1 on a host driver (they enable their device), 0 unbound,
   * and on a vfio driver 1 exactly while a process holds a device fd of it (see processes).
   */
  enable?: boolean;
}
