// Realistic core Device objects, validated by core's own schema so the database is tested with
// exactly what ingest will hand it.
import { type Device, deviceSchema } from '@vfio-fleet/core';

/** The i-th PCI function on domain 0000 (up to 65,536 distinct addresses). */
export function addressOf(i: number): string {
  const bus = (i >> 8) & 0xff;
  const slot = (i >> 3) & 0x1f;
  const fn = i & 7;
  return `0000:${bus.toString(16).padStart(2, '0')}:${slot.toString(16).padStart(2, '0')}.${fn}`;
}

export function makeDevice(i: number, overrides: Partial<Device> = {}): Device {
  const address = addressOf(i);
  const device: Device = {
    address,
    vendorId: '10de',
    deviceId: '2330',
    subsystemVendorId: '10de',
    subsystemDeviceId: '16c1',
    classCode: '030200',
    revision: 'a1',
    modalias: 'pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00',
    driver: 'nvidia',
    driverModule: 'nvidia',
    driverOverride: null,
    iommuGroup: 100 + i,
    numaNode: i % 2,
    kind: 'endpoint',
    parent: null,
    sriov: null,
    physfn: null,
    resetMethods: ['flr', 'bus'],
    resettable: true,
    bootVga: false,
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: [],
    names: {
      vendor: 'NVIDIA Corporation',
      device: 'GH100 [H100 SXM5 80GB]',
      subsystem: null,
      className: '3D controller',
    },
    vfio: {
      module: 'nvgrace_gpu_vfio_pci',
      driver: 'nvgrace_gpu_vfio_pci',
      driverSource: 'convention',
      source: 'alias',
      ambiguous: false,
      candidates: [
        {
          pattern: 'vfio_pci:v000010DEd00002330sv*sd*bc*sc*i*',
          module: 'nvgrace_gpu_vfio_pci',
          wildcards: 4,
          line: 12345,
        },
      ],
      explanation: 'matched the vfio_pci alias with the fewest wildcards',
    },
    vfioDriver: 'nvgrace_gpu_vfio_pci',
    readiness: {
      status: 'ready',
      reasons: [
        {
          code: 'host-driver-bound',
          severity: 'info',
          message: `${address} is bound to nvidia; moving it unbinds that driver.`,
          remedy: null,
          related: [],
        },
      ],
    },
    ...overrides,
  };
  return deviceSchema.parse(device);
}

export function blocked(device: Device, code: string): Device {
  return deviceSchema.parse({
    ...device,
    readiness: {
      status: 'blocked',
      reasons: [
        { code, severity: 'error', message: `blocked by ${code}`, remedy: 'fix it', related: [] },
        ...device.readiness.reasons,
      ],
    },
  });
}
