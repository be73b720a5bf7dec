/**
 * The host inventory model: what an agent reads from one host, plus what core derives from it
 * (the vfio driver each device would get, and its readiness). Versioned, because agents and
 * servers of different releases exchange it and scripts consume `scan --json`.
 *
 * Public contract of `scan --json` (scripts rely on it; do not rename): `host.iommu.enabled`, and
 * per `devices[]`: `address`, `vendorId`, `deviceId`, `classCode`, `driver`, `iommuGroup`,
 * `vfioDriver`, `inUse`, `holder` (`{pid, command, vm}` or null), `readiness.status`,
 * `readiness.reasons[].code`.
 */
import { z } from 'zod';

export const INVENTORY_SCHEMA_VERSION = 1 as const;

/** Canonical PCI address as the kernel names it: `%04x:%02x:%02x.%d` (domains above 0xffff, e.g. VMD, are longer). */
export const PCI_ADDRESS_PATTERN = /^[0-9a-f]{4,8}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]$/;

export const pciAddressSchema = z
  .string()
  .regex(PCI_ADDRESS_PATTERN, 'expected a canonical PCI address such as 0000:3b:00.1');
export const hex4Schema = z.string().regex(/^[0-9a-f]{4}$/, 'expected 4 lowercase hex digits');
export const hex2Schema = z.string().regex(/^[0-9a-f]{2}$/, 'expected 2 lowercase hex digits');
export const hex6Schema = z.string().regex(/^[0-9a-f]{6}$/, 'expected 6 lowercase hex digits');
/** Kernel module and PCI driver names: no path separators, no whitespace. */
export const kernelNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.:+-]{1,64}$/, 'expected a kernel module or driver name');

export const cpuVendorSchema = z.enum(['intel', 'amd', 'arm', 'other', 'unknown']);
export type CpuVendor = z.infer<typeof cpuVendorSchema>;

/** IOMMU-related kernel command line flags, as the operator set them (values verbatim). */
export const cmdlineFlagsSchema = z.object({
  /** `intel_iommu=` value, e.g. `on`, `on,sm_on`, `off`; null when absent. */
  intelIommu: z.string().nullable(),
  /** `amd_iommu=` value, e.g. `on`, `off`, `force_isolation`; null when absent. */
  amdIommu: z.string().nullable(),
  /** `iommu=` value, e.g. `pt`, `nopt`, `off`, `force`; null when absent. */
  iommu: z.string().nullable(),
  /** `iommu.passthrough=` value (arm64 and generic), null when absent. */
  iommuPassthrough: z.string().nullable(),
  /** `pcie_acs_override=` value (out-of-tree ACS override patch), null when absent. */
  pcieAcsOverride: z.string().nullable(),
  /** `vfio-pci.ids=` (or `vfio_pci.ids=`) entries, e.g. `10de:1b80`. */
  vfioPciIds: z.array(z.string()),
  /** The whole command line, for display. */
  raw: z.string(),
});
export type CmdlineFlags = z.infer<typeof cmdlineFlagsSchema>;

export const criticalKindSchema = z.enum(['root-disk', 'default-route', 'boot-vga-console']);
export type CriticalKind = z.infer<typeof criticalKindSchema>;

/** A device the host cannot lose: taking it for a VM would take down the host itself. */
export const criticalDeviceSchema = z.object({
  address: pciAddressSchema,
  kind: criticalKindSchema,
  /** Human detail: `/ on /dev/nvme0n1p2`, `default route via eth0`, `fbcon on efifb`. */
  detail: z.string(),
});
export type CriticalDevice = z.infer<typeof criticalDeviceSchema>;

export const interruptRemappingSchema = z.enum(['enabled', 'disabled', 'unknown']);

export const hostSchema = z.object({
  hostname: z.string(),
  /** /etc/machine-id; null when the host has none. */
  machineId: z.string().nullable(),
  /** /proc/sys/kernel/osrelease. */
  kernelRelease: z.string().nullable(),
  cpuVendor: cpuVendorSchema,
  /** True when /proc/cpuinfo carries the `hypervisor` flag: this host is itself a VM. */
  virtualMachine: z.boolean(),
  cmdline: cmdlineFlagsSchema,
  iommu: z.object({
    /** True when the kernel created IOMMU groups (the only thing vfio needs). */
    enabled: z.boolean(),
    /** Entries of /sys/class/iommu (dmar0, ivhd0, smmu3.0x...). */
    units: z.array(z.string()),
    groupCount: z.number().int().nonnegative(),
    /** From /proc/interrupts (`IR-` irq chips) when the IOMMU is on. */
    interruptRemapping: interruptRemappingSchema,
  }),
  vfio: z.object({
    /** Loaded vfio modules (vfio, vfio_pci, vfio_pci_core, vfio_iommu_type1, variant drivers...). */
    modulesLoaded: z.array(z.string()),
    /** Entries of /dev/vfio: `vfio`, group numbers, `noiommu-N`. */
    devNodes: z.array(z.string()),
  }),
  modulesAlias: z.object({
    /** Path read (relative to the host root), or null when none was found. */
    path: z.string().nullable(),
    pciAliases: z.number().int().nonnegative(),
    vfioAliases: z.number().int().nonnegative(),
    /** Malformed lines found in it (they are skipped, the rest is used). */
    malformedLines: z.number().int().nonnegative(),
  }),
  /** pci.ids file used for names, or null. */
  pciIdsPath: z.string().nullable(),
  critical: z.array(criticalDeviceSchema),
});
export type Host = z.infer<typeof hostSchema>;

export const vfioCandidateSchema = z.object({
  /** The modules.alias pattern, e.g. `vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*`. */
  pattern: z.string(),
  module: kernelNameSchema,
  /** Number of `*` in the pattern: fewer is more specific. */
  wildcards: z.number().int().nonnegative(),
  /** 1-based line in modules.alias (file order breaks ties). */
  line: z.number().int().positive(),
});
export type VfioCandidate = z.infer<typeof vfioCandidateSchema>;

/** Which vfio driver a device gets, and why: a UI shows `explanation` and `candidates`. */
export const vfioSelectionSchema = z.object({
  /** Module to modprobe, e.g. `mlx5_vfio_pci`, `vfio_pci`. */
  module: kernelNameSchema,
  /** PCI driver name to write to driver_override, e.g. `mlx5_vfio_pci`, `vfio-pci`. */
  driver: kernelNameSchema,
  /** `sysfs`: read from /sys/module/<module>/drivers/pci:<name>; `convention`: module not loaded, known naming. */
  driverSource: z.enum(['sysfs', 'convention']),
  /** `alias`: a vfio_pci: alias matched; `fallback`: none did (kernel < 5.16 or no modules.alias). */
  source: z.enum(['alias', 'fallback']),
  /** More than one candidate had the fewest wildcards; the first in file order won. */
  ambiguous: z.boolean(),
  candidates: z.array(vfioCandidateSchema),
  explanation: z.string(),
});
export type VfioSelection = z.infer<typeof vfioSelectionSchema>;

export const severitySchema = z.enum(['error', 'warning', 'info']);
export type Severity = z.infer<typeof severitySchema>;

export const readinessReasonSchema = z.object({
  /** Stable code, e.g. `iommu-off`; UIs and scripts key on it. */
  code: z.string().regex(/^[a-z0-9-]+$/),
  severity: severitySchema,
  message: z.string(),
  /** What the operator should do about it; null when nothing is needed. */
  remedy: z.string().nullable(),
  /** Other devices the reason is about (group members, the critical device...). */
  related: z.array(pciAddressSchema),
});
export type ReadinessReason = z.infer<typeof readinessReasonSchema>;

/**
 * `in-use`: on a vfio driver and held by a user (a VM); `bound`: on a vfio driver in a viable
 * group, free; `ready`: could be moved to vfio; `blocked`: an error reason says why not.
 */
export const READINESS_STATUSES = ['in-use', 'bound', 'ready', 'blocked'] as const;
export const readinessStatusSchema = z.enum(READINESS_STATUSES);
export type ReadinessStatus = z.infer<typeof readinessStatusSchema>;

export const readinessSchema = z.object({
  status: readinessStatusSchema,
  /** Errors first, then warnings, then info. A `blocked` device has at least one error. */
  reasons: z.array(readinessReasonSchema),
});
export type Readiness = z.infer<typeof readinessSchema>;

export const deviceKindSchema = z.enum(['endpoint', 'bridge']);
export type DeviceKind = z.infer<typeof deviceKindSchema>;

export const sriovSchema = z.object({
  totalVfs: z.number().int().nonnegative(),
  numVfs: z.number().int().nonnegative(),
  /** sriov_drivers_autoprobe; null when the file is absent. */
  driversAutoprobe: z.boolean().nullable(),
  /** Addresses of the enabled VFs (virtfnN links). */
  vfs: z.array(pciAddressSchema),
});

export const deviceNamesSchema = z.object({
  vendor: z.string().nullable(),
  device: z.string().nullable(),
  subsystem: z.string().nullable(),
  /** Always present: from pci.ids when available, else core's built-in class table. */
  className: z.string(),
});

/**
 * A process holding a device through vfio, as found in /proc: its pid, its command (comm), and the
 * VM it says it runs (QEMU's `-name guest=`, libvirt's domain...), null when it does not say.
 */
export const deviceHolderSchema = z.object({
  pid: z.number().int().positive(),
  command: z.string(),
  vm: z.string().nullable(),
});
export type DeviceHolder = z.infer<typeof deviceHolderSchema>;

/**
 * What re-creates a device's binding at boot (a sysfs rebind alone is lost): the agent's own
 * persisted bindings (`bind --persist`, the dashboard's "keep across reboots"), driverctl,
 * `vfio-pci.ids=` on the kernel command line, `options vfio-pci ids=` in modprobe.d.
 */
export const KEEPERS = ['vfio-fleet', 'driverctl', 'vfio-pci.ids', 'modprobe.d'] as const;
export const keeperSchema = z.enum(KEEPERS);
export type Keeper = z.infer<typeof keeperSchema>;

export const keptBySchema = z.object({
  keeper: keeperSchema,
  /** The driver it binds the device to at boot (may differ from the one it is on now). */
  driver: kernelNameSchema,
  /** Where the claim lives: a file, or `/proc/cmdline`. */
  source: z.string(),
});
export type KeptBy = z.infer<typeof keptBySchema>;

/** What the agent reads about one PCI function, before readiness is assessed. */
export const deviceFactsSchema = z.object({
  address: pciAddressSchema,
  vendorId: hex4Schema,
  deviceId: hex4Schema,
  subsystemVendorId: hex4Schema.nullable(),
  subsystemDeviceId: hex4Schema.nullable(),
  classCode: hex6Schema,
  revision: hex2Schema.nullable(),
  /** Verbatim from sysfs (the kernel writes uppercase hex); null when unreadable. */
  modalias: z.string().nullable(),
  /** Bound PCI driver name (basename of the `driver` link), null when unbound. */
  driver: kernelNameSchema.nullable(),
  /** Module providing the bound driver (`driver/module` link), null when built in or unbound. */
  driverModule: kernelNameSchema.nullable(),
  /** driver_override contents; null when empty, `(null)`, or absent. */
  driverOverride: z.string().nullable(),
  iommuGroup: z.number().int().nonnegative().nullable(),
  /** NUMA node; null when the platform reports -1 or nothing. */
  numaNode: z.number().int().nonnegative().nullable(),
  kind: deviceKindSchema,
  /** Upstream PCI device (the bridge or root port above), null for devices on a root bus. */
  parent: pciAddressSchema.nullable(),
  /** SR-IOV capability of a physical function; null when the device has none. */
  sriov: sriovSchema.nullable(),
  /** For a virtual function: its physical function. */
  physfn: pciAddressSchema.nullable(),
  /** reset_method contents (`flr`, `pm`, `bus`...); empty when none or the kernel predates the file. */
  resetMethods: z.array(z.string()),
  /** The `reset` attribute exists: the kernel can reset this function somehow. */
  resettable: z.boolean(),
  bootVga: z.boolean(),
  /** Network interfaces this function provides (lose them when it is unbound). */
  netInterfaces: z.array(z.string()),
  names: deviceNamesSchema,
  /** Selected vfio driver; null when the device has no modalias to match. */
  vfio: vfioSelectionSchema.nullable(),
  /** Shortcut for scripts: `vfio.module`. */
  vfioDriver: kernelNameSchema.nullable(),
  /**
   * On a vfio driver and held open by a user (`enable` reads 1 exactly while a device fd is open).
   * Defaults keep snapshots of agents that predate the field readable.
   */
  inUse: z.boolean().default(false),
  /** Who holds it; null when free, or held only through an fd /proc does not name. */
  holder: deviceHolderSchema.nullable().default(null),
  /** Every mechanism that binds it at boot; empty when nothing does (a vfio binding is then lost). */
  keptBy: z.array(keptBySchema).max(8).default([]),
});
export type DeviceFacts = z.infer<typeof deviceFactsSchema>;

export const deviceSchema = deviceFactsSchema.extend({ readiness: readinessSchema });
export type Device = z.infer<typeof deviceSchema>;

export const iommuGroupSchema = z.object({
  id: z.number().int().nonnegative(),
  devices: z.array(pciAddressSchema),
});
export type IommuGroup = z.infer<typeof iommuGroupSchema>;

/** What could be read of a PCI function whose own files could not (it is left out of `devices`). */
export const unreadableDeviceSchema = z.object({
  address: pciAddressSchema,
  /** From the /sys/kernel/iommu_groups listing (else its iommu_group link); null when in none. */
  iommuGroup: z.number().int().nonnegative().nullable(),
  /** Basename of its `driver` link; null when unbound or unreadable. */
  driver: kernelNameSchema.nullable(),
});
export type UnreadableDevice = z.infer<typeof unreadableDeviceSchema>;

/** Something the agent could not read, reported instead of failing: a missing file is a state. */
export const problemSchema = z.object({
  source: z.string(),
  message: z.string(),
  /**
   * Set when what could not be read is a PCI function: readiness then blocks every member of its
   * IOMMU group (`group-member-unreadable`) and no plan moves that group. Optional: agents before
   * this field report only source and message, and the server finds such a member from the
   * group listing (see readiness/unreadable.ts).
   */
  device: unreadableDeviceSchema.optional(),
});
export type Problem = z.infer<typeof problemSchema>;

export const hostFactsSnapshotSchema = z.object({
  schemaVersion: z.literal(INVENTORY_SCHEMA_VERSION),
  /** ISO 8601. */
  collectedAt: z.string(),
  host: hostSchema,
  devices: z.array(deviceFactsSchema),
  groups: z.array(iommuGroupSchema),
  problems: z.array(problemSchema),
});
export type HostFactsSnapshot = z.infer<typeof hostFactsSnapshotSchema>;

export const hostSnapshotSchema = hostFactsSnapshotSchema.extend({
  devices: z.array(deviceSchema),
});
export type HostSnapshot = z.infer<typeof hostSnapshotSchema>;
