/**
 * Named, realistic hosts for tests and demos. Ids are real (checked against pci.ids 2026.10.24 in
 * /work/shared/testdata), topologies follow what those platforms enumerate (Ice Lake-SP root ports
 * on their own stack buses, the ASPEED BMC VGA behind its AST1150 PCIe-to-PCI bridge, ConnectX
 * VFs beside their PF), and each scenario isolates one situation readiness must judge.
 */
import { buildHostTree } from './build-tree';
import type { DeviceSpec, HostSpec } from './host-spec';
import { SCENARIO_MODULES_ALIAS } from './scenario-modules-alias';
import { vmRunning } from './scenario-vm-running';

export const SCENARIO_NAMES = [
  'dual-gpu',
  'mlx5-vf',
  'critical-nvme-nic',
  'iommu-off',
  'vfio-bound',
  'vm-running',
] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export interface ScenarioOptions {
  /** Replaces the built-in modules.alias (e.g. a whole real file); null leaves it absent. */
  modulesAlias?: string | null;
}

/** Debian bookworm's 6.12 kernel: the release the real alias files in testdata come from. */
const KERNEL_RELEASE = '6.12.117+deb12-amd64';
const BOOT = `BOOT_IMAGE=/boot/vmlinuz-${KERNEL_RELEASE} root=UUID=3f1c2a9e-5b7d-4c1e-9a8f-2d6b0e4c7a15 ro quiet`;

export function scenario(name: ScenarioName, opts: ScenarioOptions = {}): HostSpec {
  const spec = SCENARIOS[name]();
  const modulesAlias =
    opts.modulesAlias === undefined ? SCENARIO_MODULES_ALIAS[name] : opts.modulesAlias;
  return { ...spec, modulesAlias };
}

export async function buildScenario(
  root: string,
  name: ScenarioName,
  opts: ScenarioOptions = {},
): Promise<HostSpec> {
  const spec = scenario(name, opts);
  await buildHostTree(root, spec);
  return spec;
}

export type ScenarioSpec = Omit<HostSpec, 'modulesAlias'>;

const SCENARIOS: Record<ScenarioName, () => ScenarioSpec> = {
  'dual-gpu': dualGpu,
  'mlx5-vf': mlx5Vf,
  'critical-nvme-nic': criticalNvmeNic,
  'iommu-off': iommuOff,
  'vfio-bound': vfioBound,
  'vm-running': () => vmRunning(vfioBound()),
};

// ---------------------------------------------------------------------------------------------
// Building blocks. Each takes the IOMMU group so scenarios state their grouping explicitly.

const BUILTIN = { driverModule: null } as const;

/** Ice Lake-SP CPU root port (8086:347a), built-in pcieport; bridges have no reset of their own. */
function iceLakeRootPort(address: string, iommuGroup: number | null): DeviceSpec {
  return {
    address,
    vendorId: '8086',
    deviceId: '347a',
    classCode: '060400',
    revision: '04',
    driver: 'pcieport',
    ...BUILTIN,
    iommuGroup,
    numaNode: 0,
  };
}

/** C620 (Lewisburg) PCH root port #0, where Supermicro boards hang the BMC. */
function pchRootPort(address: string, iommuGroup: number | null): DeviceSpec {
  return { ...iceLakeRootPort(address, iommuGroup), deviceId: 'a190', revision: '09' };
}

/** AMD EPYC Milan GPP bridge (1022:1483). */
function milanRootPort(address: string, iommuGroup: number | null): DeviceSpec {
  return {
    ...iceLakeRootPort(address, iommuGroup),
    vendorId: '1022',
    deviceId: '1483',
    revision: '00',
  };
}

/**
 * The BMC's VGA (ASPEED 1a03:2000) behind its AST1150 PCIe-to-PCI bridge. Without ACS across a
 * conventional PCI bridge both land in one group; FLR is a PCIe feature, so only bus reset.
 */
function aspeedVga(rootPort: string, iommuGroup: number | null): DeviceSpec[] {
  return [
    {
      address: '0000:01:00.0',
      vendorId: '1a03',
      deviceId: '1150',
      classCode: '060400',
      revision: '04',
      parent: rootPort,
      iommuGroup,
      numaNode: 0,
    },
    {
      address: '0000:02:00.0',
      vendorId: '1a03',
      deviceId: '2000',
      subsystemVendorId: '1a03',
      subsystemDeviceId: '2000',
      classCode: '030000',
      revision: '41',
      driver: 'ast',
      parent: '0000:01:00.0',
      iommuGroup,
      numaNode: 0,
      bootVga: true,
      resetMethods: ['bus'],
    },
  ];
}

/**
 * GeForce RTX 3090 Founders Edition (10de:2204) and its HDMI audio function (10de:1aef) sharing
 * one group, as multifunction devices without ACS do. Consumer Ampere has no FLR.
 */
function rtx3090(
  bus: string,
  parent: string | undefined,
  iommuGroup: number | null,
  binding: { gpu: string; audio: string; override: string | null },
): DeviceSpec[] {
  const common = {
    vendorId: '10de',
    subsystemVendorId: '10de',
    subsystemDeviceId: '147d',
    revision: 'a1',
    iommuGroup,
    numaNode: 0,
    resetMethods: ['bus'],
    driverOverride: binding.override,
    ...(parent === undefined ? {} : { parent }),
  };
  return [
    {
      ...common,
      address: `0000:${bus}:00.0`,
      deviceId: '2204',
      classCode: '030000',
      driver: binding.gpu,
      bootVga: false,
    },
    {
      ...common,
      address: `0000:${bus}:00.1`,
      deviceId: '1aef',
      classCode: '040300',
      driver: binding.audio,
    },
  ];
}

/** Samsung PM9A3 (144d:a80a, subsystem 144d:a813 "General DC NVMe PM9A3"). */
function pm9a3(address: string, parent: string, iommuGroup: number | null): DeviceSpec {
  return {
    address,
    vendorId: '144d',
    deviceId: 'a80a',
    subsystemVendorId: '144d',
    subsystemDeviceId: 'a813',
    classCode: '010802',
    driver: 'nvme',
    parent,
    iommuGroup,
    numaNode: 0,
  };
}

/** Intel X710-2 (8086:1572, subsystem 8086:0007): i40e, one group per function (ACS quirk). */
function x710(bus: string, parent: string, groups: [number, number] | null): DeviceSpec[] {
  return [0, 1].map((fn) => ({
    address: `0000:${bus}:00.${fn}`,
    vendorId: '8086',
    deviceId: '1572',
    subsystemVendorId: '8086',
    subsystemDeviceId: '0007',
    classCode: '020000',
    revision: '02',
    driver: 'i40e',
    parent,
    iommuGroup: groups === null ? null : groups[fn],
    numaNode: 0,
    netInterfaces: [`enp${Number.parseInt(bus, 16)}s0f${fn}`],
  }));
}

const NVME_ROOT = { disk: 'nvme0n1', partition: 'nvme0n1p2', majorMinor: '259:2' } as const;

function intelHost(name: string, cmdline: string): Omit<ScenarioSpec, 'devices' | 'loadedModules'> {
  return {
    hostname: name,
    machineId: machineIdFor(name),
    kernelRelease: KERNEL_RELEASE,
    cpuVendor: 'intel',
    cmdline,
    iommu: { enabled: cmdline.split(' ').includes('intel_iommu=on') },
  };
}

/** A stable 32-hex machine id per host name (demo fleets need distinct, repeatable ids). */
function machineIdFor(name: string): string {
  let hash = 0x811c9dc5;
  let out = '';
  for (let round = 0; out.length < 32; round++) {
    for (const ch of `${name}#${round}`)
      hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    out += hash.toString(16).padStart(8, '0');
  }
  return out.slice(0, 32);
}

const NVIDIA_MODULES = [
  { name: 'nvidia', pciDrivers: ['nvidia'] },
  { name: 'nvidia_modeset' },
  { name: 'nvidia_drm' },
  { name: 'nvidia_uvm' },
];

// ---------------------------------------------------------------------------------------------
// Scenarios.

/**
 * Intel Ice Lake-SP with intel_iommu=on: two RTX 3090s (each GPU + HDMI audio in one group behind
 * its own root port), the root NVMe and the default-route X710 in their own groups, and the BMC's
 * ASPEED VGA carrying fbcon.
 */
function dualGpu(): ScenarioSpec {
  return {
    ...intelHost('gpu-node-01', `${BOOT} intel_iommu=on`),
    devices: [
      pchRootPort('0000:00:1c.0', 12),
      ...aspeedVga('0000:00:1c.0', 13),
      iceLakeRootPort('0000:16:02.0', 20),
      ...rtx3090('17', '0000:16:02.0', 21, {
        gpu: 'nvidia',
        audio: 'snd_hda_intel',
        override: null,
      }),
      iceLakeRootPort('0000:30:02.0', 30),
      ...rtx3090('31', '0000:30:02.0', 31, {
        gpu: 'nvidia',
        audio: 'snd_hda_intel',
        override: null,
      }),
      iceLakeRootPort('0000:4a:02.0', 40),
      pm9a3('0000:4b:00.0', '0000:4a:02.0', 41),
      iceLakeRootPort('0000:64:02.0', 50),
      ...x710('65', '0000:64:02.0', [51, 52]),
    ],
    loadedModules: [
      ...NVIDIA_MODULES,
      { name: 'snd_hda_intel', pciDrivers: ['snd_hda_intel'] },
      { name: 'nvme', pciDrivers: ['nvme'] },
      { name: 'nvme_core' },
      { name: 'i40e', pciDrivers: ['i40e'] },
      { name: 'ast', pciDrivers: ['ast'] },
    ],
    rootDisk: { address: '0000:4b:00.0', ...NVME_ROOT, nvmeMultipath: true },
    defaultRoute: { iface: 'enp101s0f0' },
    fbconsole: true,
  };
}

/**
 * AMD EPYC Milan (IOMMU on by default, ivhd0): a dual-port ConnectX-6 Dx whose first PF has 2 of
 * 8 VFs enabled (VFs 15b3:101e on mlx5_core, each in its own group); the root NVMe and the
 * default-route Broadcom BCM5720 LOM (both ports in one group) elsewhere. With the real
 * +vfio-variants modules.alias the VFs select mlx5_vfio_pci.
 */
function mlx5Vf(): ScenarioSpec {
  const pf = (fn: number, group: number, numVfs: number): DeviceSpec => ({
    address: `0000:41:00.${fn}`,
    vendorId: '15b3',
    deviceId: '101d',
    // The board id lspci shows on these VFs; ConnectX functions report the board's subsystem.
    subsystemVendorId: '15b3',
    subsystemDeviceId: '0083',
    classCode: '020000',
    driver: 'mlx5_core',
    parent: '0000:40:01.1',
    iommuGroup: group,
    numaNode: 0,
    // ARI: PF0's 8 VFs follow the two PFs (offset 2), PF1's follow those (1 + 8).
    sriov: { totalVfs: 8, numVfs, offset: fn === 0 ? 2 : 9, stride: 1, vfDeviceId: '101e' },
    netInterfaces: [`enp65s0f${fn}np${fn}`],
  });
  const vf = (fn: number, index: number, group: number): DeviceSpec => ({
    address: `0000:41:00.${fn}`,
    vendorId: '15b3',
    deviceId: '101e',
    subsystemVendorId: '15b3',
    subsystemDeviceId: '0083',
    classCode: '020000',
    driver: 'mlx5_core',
    physfn: '0000:41:00.0',
    iommuGroup: group,
    numaNode: 0,
    netInterfaces: [`enp65s0f0v${index}`],
  });
  const bcm5720 = (fn: number): DeviceSpec => ({
    address: `0000:c1:00.${fn}`,
    vendorId: '14e4',
    deviceId: '165f',
    // "PowerEdge R6515/R7515 LOM": Dell's Milan servers.
    subsystemVendorId: '1028',
    subsystemDeviceId: '08fd',
    classCode: '020000',
    driver: 'tg3',
    parent: '0000:c0:03.1',
    iommuGroup: 41,
    numaNode: 0,
    netInterfaces: [`eno${8303 + fn * 100}`],
  });
  return {
    hostname: 'nic-node-07',
    machineId: machineIdFor('nic-node-07'),
    kernelRelease: KERNEL_RELEASE,
    cpuVendor: 'amd',
    cmdline: BOOT,
    iommu: { enabled: true },
    devices: [
      milanRootPort('0000:00:01.1', 2),
      pm9a3('0000:01:00.0', '0000:00:01.1', 3),
      milanRootPort('0000:40:01.1', 20),
      pf(0, 21, 2),
      pf(1, 22, 0),
      vf(2, 0, 23),
      vf(3, 1, 24),
      milanRootPort('0000:c0:03.1', 40),
      bcm5720(0),
      bcm5720(1),
    ],
    loadedModules: [
      { name: 'mlx5_core', pciDrivers: ['mlx5_core'] },
      { name: 'mlx5_ib' },
      { name: 'nvme', pciDrivers: ['nvme'] },
      { name: 'nvme_core' },
      { name: 'tg3', pciDrivers: ['tg3'] },
    ],
    rootDisk: { address: '0000:01:00.0', ...NVME_ROOT },
    defaultRoute: { iface: 'eno8303' },
  };
}

/**
 * The host-critical devices: `/` on a Solidigm D7-P5510 NVMe and a dual-stack default route on an
 * Intel X550-T2 whose second port shares the first's group (so it cannot go alone either). A data
 * NVMe and a Tesla T4 in their own groups are the devices that can be passed through. Headless.
 */
function criticalNvmeNic(): ScenarioSpec {
  const x550 = (fn: number): DeviceSpec => ({
    address: `0000:4b:00.${fn}`,
    vendorId: '8086',
    deviceId: '1563',
    subsystemVendorId: '8086',
    subsystemDeviceId: '0001',
    classCode: '020000',
    revision: '01',
    driver: 'ixgbe',
    parent: '0000:4a:02.0',
    iommuGroup: 41,
    numaNode: 0,
    netInterfaces: [`enp75s0f${fn}`],
  });
  return {
    ...intelHost('db-node-03', `${BOOT} intel_iommu=on`),
    devices: [
      iceLakeRootPort('0000:16:02.0', 20),
      {
        address: '0000:17:00.0',
        vendorId: '8086',
        deviceId: '0b60',
        subsystemVendorId: '025e',
        subsystemDeviceId: '8008',
        classCode: '010802',
        driver: 'nvme',
        parent: '0000:16:02.0',
        iommuGroup: 21,
        numaNode: 0,
      },
      iceLakeRootPort('0000:30:02.0', 30),
      pm9a3('0000:31:00.0', '0000:30:02.0', 31),
      iceLakeRootPort('0000:4a:02.0', 40),
      x550(0),
      x550(1),
      iceLakeRootPort('0000:64:02.0', 50),
      {
        address: '0000:65:00.0',
        vendorId: '10de',
        deviceId: '1eb8',
        subsystemVendorId: '10de',
        subsystemDeviceId: '12a2',
        classCode: '030200',
        revision: 'a1',
        driver: 'nvidia',
        parent: '0000:64:02.0',
        iommuGroup: 51,
        numaNode: 0,
      },
    ],
    loadedModules: [
      ...NVIDIA_MODULES,
      { name: 'nvme', pciDrivers: ['nvme'] },
      { name: 'nvme_core' },
      { name: 'ixgbe', pciDrivers: ['ixgbe'] },
    ],
    rootDisk: { address: '0000:17:00.0', ...NVME_ROOT, nvmeMultipath: true },
    defaultRoute: { iface: 'enp75s0f0', ipv6: true },
  };
}

/**
 * Intel without intel_iommu=on (Debian does not enable it by default): no groups, no DMAR units,
 * plain PCI-MSI. An RTX 3090 that cannot be passed through until the IOMMU is turned on.
 */
function iommuOff(): ScenarioSpec {
  const i350 = (fn: number): DeviceSpec => ({
    address: `0000:65:00.${fn}`,
    vendorId: '8086',
    deviceId: '1521',
    subsystemVendorId: '8086',
    subsystemDeviceId: '0002',
    classCode: '020000',
    revision: '01',
    driver: 'igb',
    parent: '0000:64:02.0',
    numaNode: 0,
    netInterfaces: [`enp101s0f${fn}`],
  });
  return {
    ...intelHost('legacy-node-02', BOOT),
    devices: [
      pchRootPort('0000:00:1c.0', null),
      ...aspeedVga('0000:00:1c.0', null),
      iceLakeRootPort('0000:16:02.0', null),
      ...rtx3090('17', '0000:16:02.0', null, {
        gpu: 'nvidia',
        audio: 'snd_hda_intel',
        override: null,
      }),
      iceLakeRootPort('0000:4a:02.0', null),
      pm9a3('0000:4b:00.0', '0000:4a:02.0', null),
      iceLakeRootPort('0000:64:02.0', null),
      i350(0),
      i350(1),
    ],
    loadedModules: [
      ...NVIDIA_MODULES,
      { name: 'snd_hda_intel', pciDrivers: ['snd_hda_intel'] },
      { name: 'nvme', pciDrivers: ['nvme'] },
      { name: 'nvme_core' },
      { name: 'igb', pciDrivers: ['igb'] },
      { name: 'ast', pciDrivers: ['ast'] },
    ],
    rootDisk: { address: '0000:4b:00.0', ...NVME_ROOT },
    defaultRoute: { iface: 'enp101s0f0' },
    fbconsole: true,
  };
}

/**
 * A passthrough host already set up: intel_iommu=on iommu=pt, an RTX 3090 and its audio function
 * on vfio-pci through driver_override, the vfio modules loaded and /dev/vfio/21 present.
 */
function vfioBound(): ScenarioSpec {
  return {
    ...intelHost('vm-host-05', `${BOOT} intel_iommu=on iommu=pt`),
    devices: [
      pchRootPort('0000:00:1c.0', 12),
      ...aspeedVga('0000:00:1c.0', 13),
      iceLakeRootPort('0000:16:02.0', 20),
      ...rtx3090('17', '0000:16:02.0', 21, {
        gpu: 'vfio-pci',
        audio: 'vfio-pci',
        override: 'vfio-pci',
      }),
      iceLakeRootPort('0000:4a:02.0', 40),
      pm9a3('0000:4b:00.0', '0000:4a:02.0', 41),
      iceLakeRootPort('0000:64:02.0', 50),
      ...x710('65', '0000:64:02.0', [51, 52]),
    ],
    loadedModules: [
      { name: 'vfio' },
      { name: 'vfio_iommu_type1' },
      { name: 'vfio_pci_core' },
      { name: 'vfio_pci', pciDrivers: ['vfio-pci'] },
      { name: 'nvme', pciDrivers: ['nvme'] },
      { name: 'nvme_core' },
      { name: 'i40e', pciDrivers: ['i40e'] },
      { name: 'ast', pciDrivers: ['ast'] },
    ],
    rootDisk: { address: '0000:4b:00.0', ...NVME_ROOT },
    defaultRoute: { iface: 'enp101s0f0' },
    fbconsole: true,
  };
}
