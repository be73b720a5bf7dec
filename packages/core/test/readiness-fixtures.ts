// Builders for readiness tests: complete objects that pass the schema, so tests exercise real
// shapes.
import {
  type DeviceFacts,
  deviceFactsSchema,
  type Host,
  hostSchema,
  type Readiness,
  type ReadinessReason,
  type VfioSelection,
} from '../src/inventory/schema';
import type { RuleContext } from '../src/readiness/rules';

export type HostOverrides = Partial<Omit<Host, 'iommu' | 'cmdline'>> & {
  iommu?: Partial<Host['iommu']>;
  cmdline?: Partial<Host['cmdline']>;
};

export function makeHost(overrides: HostOverrides = {}): Host {
  const { iommu, cmdline, ...rest } = overrides;
  return hostSchema.parse({
    hostname: 'gpu01',
    machineId: '0123456789abcdef0123456789abcdef',
    kernelRelease: '6.12.117+deb12-amd64',
    cpuVendor: 'intel',
    virtualMachine: false,
    vfio: { modulesLoaded: ['vfio', 'vfio_pci'], devNodes: ['vfio'] },
    modulesAlias: {
      path: 'lib/modules/6.12.117+deb12-amd64/modules.alias',
      pciAliases: 9000,
      vfioAliases: 1,
      malformedLines: 0,
    },
    pciIdsPath: null,
    critical: [],
    ...rest,
    cmdline: {
      intelIommu: 'on',
      amdIommu: null,
      iommu: 'pt',
      iommuPassthrough: null,
      pcieAcsOverride: null,
      vfioPciIds: [],
      raw: 'BOOT_IMAGE=/vmlinuz root=/dev/nvme0n1p2 intel_iommu=on iommu=pt',
      ...cmdline,
    },
    iommu: {
      enabled: true,
      units: ['dmar0', 'dmar1'],
      groupCount: 4,
      interruptRemapping: 'enabled',
      ...iommu,
    },
  });
}

export function vfioSelection(overrides: Partial<VfioSelection> = {}): VfioSelection {
  return {
    module: 'vfio_pci',
    driver: 'vfio-pci',
    driverSource: 'convention',
    source: 'alias',
    ambiguous: false,
    candidates: [
      { pattern: 'vfio_pci:v*d*sv*sd*bc*sc*i*', module: 'vfio_pci', wildcards: 7, line: 4242 },
    ],
    explanation: 'The only vfio_pci alias matching this device is vfio_pci.',
    ...overrides,
  };
}

export function makeDevice(address: string, overrides: Partial<DeviceFacts> = {}): DeviceFacts {
  const vfio = overrides.vfio === undefined ? vfioSelection() : overrides.vfio;
  return deviceFactsSchema.parse({
    address,
    vendorId: '10de',
    deviceId: '2204',
    subsystemVendorId: '10de',
    subsystemDeviceId: '147d',
    classCode: '030000',
    revision: 'a1',
    modalias: 'pci:v000010DEd00002204sv000010DEsd0000147Dbc03sc00i00',
    driver: 'nvidia',
    driverModule: 'nvidia',
    driverOverride: null,
    iommuGroup: 1,
    numaNode: 0,
    kind: 'endpoint',
    parent: '0000:00:01.0',
    sriov: null,
    physfn: null,
    resetMethods: ['bus'],
    resettable: true,
    bootVga: false,
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: [],
    names: {
      vendor: 'NVIDIA Corporation',
      device: 'GA102 [GeForce RTX 3090]',
      subsystem: null,
      className: 'VGA compatible controller',
    },
    vfioDriver: vfio?.module ?? null,
    ...overrides,
    vfio,
  });
}

export function audio(address: string, overrides: Partial<DeviceFacts> = {}): DeviceFacts {
  return makeDevice(address, {
    deviceId: '1aef',
    classCode: '040300',
    driver: 'snd_hda_intel',
    driverModule: 'snd_hda_intel',
    resetMethods: ['flr', 'bus'],
    names: {
      vendor: 'NVIDIA Corporation',
      device: 'GA102 High Definition Audio Controller',
      subsystem: null,
      className: 'Audio device',
    },
    ...overrides,
  });
}

export function rootPort(address: string, overrides: Partial<DeviceFacts> = {}): DeviceFacts {
  return makeDevice(address, {
    vendorId: '8086',
    deviceId: '1901',
    classCode: '060400',
    driver: 'pcieport',
    driverModule: null,
    kind: 'bridge',
    parent: null,
    names: { vendor: 'Intel Corporation', device: null, subsystem: null, className: 'PCI bridge' },
    vfio: null,
    ...overrides,
  });
}

export function ctxFor(
  device: DeviceFacts,
  group: DeviceFacts[],
  host: Host = makeHost(),
): RuleContext {
  const byAddress = new Map<string, DeviceFacts>();
  for (const d of [device, ...group]) byAddress.set(d.address, d);
  return { host, device, group, byAddress };
}

export function reasonFor(readiness: Readiness, code: string): ReadinessReason {
  const found = readiness.reasons.find((r) => r.code === code);
  if (found === undefined) {
    throw new Error(`no ${code} in ${JSON.stringify(readiness.reasons.map((r) => r.code))}`);
  }
  return found;
}

export function codes(readiness: Readiness): string[] {
  return readiness.reasons.map((r) => r.code);
}

export const GPU = '0000:01:00.0';
export const AUDIO = '0000:01:00.1';
