import { describe, expect, it } from 'vitest';
import type { Device, HostSnapshot } from '../src/inventory/schema';
import { encodeMessage, parseAgentMessage } from '../src/protocol/messages';

function device(address: string): Device {
  return {
    address,
    vendorId: '8086',
    deviceId: '1572',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: '020000',
    revision: null,
    modalias: null,
    driver: 'i40e',
    driverModule: 'i40e',
    driverOverride: null,
    iommuGroup: 1,
    numaNode: null,
    kind: 'endpoint',
    parent: null,
    sriov: null,
    physfn: null,
    resetMethods: ['flr'],
    resettable: true,
    bootVga: false,
    netInterfaces: ['eth0'],
    names: { vendor: null, device: null, subsystem: null, className: 'Ethernet controller' },
    vfio: null,
    vfioDriver: null,
    readiness: { status: 'ready', reasons: [] },
  };
}

function snapshot(): HostSnapshot {
  return {
    schemaVersion: 1,
    collectedAt: '2026-11-23T13:00:00.000Z',
    host: {
      hostname: 'h1',
      machineId: null,
      kernelRelease: '6.8.0',
      cpuVendor: 'intel',
      virtualMachine: false,
      cmdline: {
        intelIommu: 'on',
        amdIommu: null,
        iommu: 'pt',
        iommuPassthrough: null,
        pcieAcsOverride: null,
        vfioPciIds: [],
        raw: 'intel_iommu=on iommu=pt',
      },
      iommu: { enabled: true, units: ['dmar0'], groupCount: 1, interruptRemapping: 'enabled' },
      vfio: { modulesLoaded: [], devNodes: ['vfio'] },
      modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
      pciIdsPath: null,
      critical: [],
    },
    devices: [device('0000:3b:00.0')],
    groups: [{ id: 1, devices: ['0000:3b:00.0'] }],
    problems: [],
  };
}

describe('smoke', () => {
  it('round-trips a snapshot', () => {
    const msg = { type: 'snapshot', epoch: 'e1', seq: 0, snapshot: snapshot() } as const;
    const parsed = parseAgentMessage(encodeMessage(msg));
    expect(parsed).toEqual({ ok: true, message: msg });
  });
});
