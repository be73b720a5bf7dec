// A fleet for the load benches: real inventories, many hosts.
//
// Each template host is a HostSpec (packages/host-fixtures) built into a sysfs tree and read back
// by the agent's own collector against the real Debian modules.alias and pci.ids, so a snapshot
// carries exactly what a real agent sends (names, vfio selections, readiness with its reasons and
// remedies), not a hand-written approximation. Hosts of a fleet are copies of a few templates with
// their own identity, the way datacenters buy racks of identical servers; a per-host variation
// (which GPUs are on vfio) keeps the device rows of different hosts from being identical.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { collectHost, HostFs } from '@vfio-fleet/agent';
import { diffSnapshots, type HostSnapshot, type SnapshotDelta } from '@vfio-fleet/core';
import { buildHostTree, type DeviceSpec, type HostSpec, scenario } from '@vfio-fleet/host-fixtures';
import { readModulesAlias, testdataPath } from '@vfio-fleet/testdata';

/** Devices per host of the fleet (5,000 × 200 = 1M device rows). */
export const DEFAULT_DEVICES_PER_HOST = 200;

const milanRootPort = (address: string, iommuGroup: number): DeviceSpec => ({
  address,
  vendorId: '1022',
  deviceId: '1483',
  classCode: '060400',
  driver: 'pcieport',
  driverModule: null,
  iommuGroup,
  numaNode: 0,
});

const hex2 = (n: number) => n.toString(16).padStart(2, '0');

/** `0000:BB:DD.F` for device-function number `devfn` on `bus`. */
const atDevfn = (bus: number, devfn: number) =>
  `0000:${hex2(bus)}:${hex2(devfn >> 3)}.${devfn & 7}`;

/**
 * An AMD EPYC GPU/NIC server of `deviceCount` PCI functions: the mlx5-vf scenario's platform
 * (root NVMe, Broadcom LOM on the default route, a ConnectX-6 Dx) with T4 GPUs and data NVMes
 * behind their own root ports, and the ConnectX PF's VFs making up the rest, each in its own group.
 */
export function largeHostSpec(deviceCount: number, hostname: string): HostSpec {
  const base = scenario('mlx5-vf', {
    modulesAlias: readModulesAlias('6.12.117+deb12-amd64+vfio-variants'),
  });
  const kept = base.devices.filter((d) => d.physfn === undefined && d.sriov === undefined);
  const devices: DeviceSpec[] = [...kept];
  let group = 100;
  // 8 GPUs and 8 data NVMes, each behind its own root port on its own bus.
  for (let i = 0; i < 8; i++) {
    const port = `0000:${hex2(0x80 + i * 2)}:01.1`;
    const bus = 0x81 + i * 2;
    devices.push(milanRootPort(port, group++), {
      address: `0000:${hex2(bus)}:00.0`,
      vendorId: '10de',
      deviceId: '1eb8',
      subsystemVendorId: '10de',
      subsystemDeviceId: '12a2',
      classCode: '030200',
      revision: 'a1',
      driver: 'nvidia',
      parent: port,
      iommuGroup: group++,
      numaNode: i < 4 ? 0 : 1,
    });
  }
  for (let i = 0; i < 8; i++) {
    const port = `0000:${hex2(0x20 + i * 2)}:01.1`;
    devices.push(milanRootPort(port, group++), {
      address: `0000:${hex2(0x21 + i * 2)}:00.0`,
      vendorId: '144d',
      deviceId: 'a80a',
      subsystemVendorId: '144d',
      subsystemDeviceId: 'a813',
      classCode: '010802',
      driver: 'nvme',
      parent: port,
      iommuGroup: group++,
      numaNode: 0,
    });
  }
  // The ConnectX PFs (41:00.0 with VFs, 41:00.1 without) and as many VFs as fill the count.
  const vfCount = Math.max(0, deviceCount - devices.length - 2);
  const pf = (fn: number, numVfs: number): DeviceSpec => ({
    address: `0000:41:00.${fn}`,
    vendorId: '15b3',
    deviceId: '101d',
    subsystemVendorId: '15b3',
    subsystemDeviceId: '0083',
    classCode: '020000',
    driver: 'mlx5_core',
    parent: '0000:40:01.1',
    iommuGroup: group++,
    numaNode: 0,
    sriov: { totalVfs: Math.max(8, numVfs), numVfs },
    netInterfaces: [`enp65s0f${fn}np${fn}`],
  });
  devices.push(pf(0, vfCount), pf(1, 0));
  for (let i = 0; i < vfCount; i++) {
    devices.push({
      address: atDevfn(0x41, 2 + i),
      vendorId: '15b3',
      deviceId: '101e',
      subsystemVendorId: '15b3',
      subsystemDeviceId: '0083',
      classCode: '020000',
      driver: 'mlx5_core',
      physfn: '0000:41:00.0',
      iommuGroup: group++,
      numaNode: 0,
      netInterfaces: [`enp65s0f0v${i}`],
    });
  }
  return { ...base, hostname, devices };
}

/** Reads a HostSpec back the way the agent does, from a tree built in a temp directory. */
export async function collectSpec(spec: HostSpec): Promise<HostSnapshot> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-bench-host-'));
  try {
    await buildHostTree(dir, spec);
    return await collectHost(new HostFs(dir), {
      pciIdsPath: testdataPath('pci.ids'),
      now: () => new Date('2026-12-01T00:00:00.000Z'),
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export interface SyntheticFleet {
  devicesPerHost: number;
  /** Host `i`'s snapshot (a fresh object each call: callers may keep or change it). */
  snapshot(i: number): HostSnapshot;
  /** Host `i`'s snapshot after its `change`-th change: one GPU's driver_override flips. */
  changed(i: number, change: number): HostSnapshot;
  /** The delta from `changed(i, change - 1)` (or the snapshot, for 1) to `changed(i, change)`. */
  delta(i: number, change: number): SnapshotDelta;
  /** JSON size of one snapshot, for reports. */
  snapshotBytes: number;
}

export function hostName(i: number): string {
  return `bench-${String(i).padStart(5, '0')}`;
}

function machineId(i: number): string {
  return (0x9e3779b1 * (i + 1)).toString(16).padStart(32, '0').slice(-32);
}

/**
 * Builds the template once (about a second) and derives every host from it: host `i` has its own
 * hostname and machine-id, and GPU number `i % 8` left unbound, so rows differ between hosts.
 */
export function syntheticFleet(devicesPerHost = DEFAULT_DEVICES_PER_HOST): Promise<SyntheticFleet> {
  // Built once per size and run: every bench of a run shares it.
  let fleet = built.get(devicesPerHost);
  if (fleet === undefined) {
    fleet = buildSyntheticFleet(devicesPerHost);
    built.set(devicesPerHost, fleet);
  }
  return fleet;
}

const built = new Map<number, Promise<SyntheticFleet>>();

async function buildSyntheticFleet(devicesPerHost: number): Promise<SyntheticFleet> {
  const template = await collectSpec(largeHostSpec(devicesPerHost, 'bench-template'));
  const templateJson = JSON.stringify(template);
  const gpus = template.devices.filter((d) => d.vendorId === '10de').map((d) => d.address);
  const snapshot = (i: number): HostSnapshot => {
    const s = JSON.parse(templateJson) as HostSnapshot;
    s.host.hostname = hostName(i);
    s.host.machineId = machineId(i);
    const idle = gpus[i % gpus.length];
    for (const d of s.devices) {
      if (d.address === idle) {
        d.driver = null;
        d.driverModule = null;
      }
    }
    return s;
  };
  const changed = (i: number, change: number): HostSnapshot => {
    const s = snapshot(i);
    if (change % 2 === 1) {
      const gpu = gpus[(i + 1) % gpus.length];
      for (const d of s.devices) if (d.address === gpu) d.driverOverride = 'vfio-pci';
    }
    return s;
  };
  return {
    devicesPerHost: template.devices.length,
    snapshot,
    changed,
    delta(i, change) {
      const delta = diffSnapshots(changed(i, change - 1), changed(i, change));
      if (delta === null) throw new Error(`change ${change} of host ${i} changes nothing`);
      return delta;
    },
    snapshotBytes: Buffer.byteLength(templateJson),
  };
}
