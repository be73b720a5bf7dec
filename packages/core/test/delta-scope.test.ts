// deltaScope is only worth having if it is exact: assessing just its `load` devices (plus what the
// delta adds) must give every `reassess` device the verdict a whole-host assessment gives, and
// every device outside `reassess` must keep the verdict it had. Checked on random hosts (bridges,
// shared groups, group listings that disagree with the devices' own group ids) and random deltas.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DeviceFacts, HostFactsSnapshot, IommuGroup } from '../src/inventory/schema';
import { applyDelta, type SnapshotDelta } from '../src/protocol/delta';
import { assessSnapshot } from '../src/readiness/assess';
import { type DeviceLinks, deltaScope } from '../src/readiness/delta-scope';

const ADDRESSES = Array.from({ length: 12 }, (_, i) => `0000:0${(i >> 3).toString()}:0${i & 7}.0`);
const DRIVERS = [null, 'nvidia', 'vfio-pci', 'mlx5_vfio_pci', 'pcieport', 'nvme'];

interface Shape {
  driver: string | null;
  group: number | null;
  parent: number | null;
  bridge: boolean;
  bootVga: boolean;
}

const shapeArb: fc.Arbitrary<Shape> = fc.record({
  driver: fc.constantFrom(...DRIVERS),
  group: fc.option(fc.integer({ min: 0, max: 4 }), { freq: 6 }),
  parent: fc.option(fc.integer({ min: 0, max: ADDRESSES.length - 1 }), { freq: 2 }),
  bridge: fc.boolean(),
  bootVga: fc.boolean(),
});

function device(address: string, shape: Shape): DeviceFacts {
  const parent = shape.parent === null ? null : (ADDRESSES[shape.parent] ?? null);
  return {
    address,
    vendorId: '10de',
    deviceId: '1eb8',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: shape.bridge ? '060400' : '030200',
    revision: 'a1',
    modalias: 'pci:v000010DEd00001EB8sv000010DEsd000012A2bc03sc02i00',
    driver: shape.driver,
    driverModule: shape.driver,
    driverOverride: null,
    iommuGroup: shape.group,
    numaNode: 0,
    kind: shape.bridge ? 'bridge' : 'endpoint',
    parent: parent === address ? null : parent,
    sriov: null,
    physfn: null,
    resetMethods: ['flr'],
    resettable: true,
    bootVga: shape.bootVga,
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: [],
    names: { vendor: 'NVIDIA', device: 'T4', subsystem: null, className: 'controller' },
    vfio: null,
    vfioDriver: 'vfio-pci',
  };
}

function snapshot(devices: DeviceFacts[], groups: IommuGroup[]): HostFactsSnapshot {
  return {
    schemaVersion: 1,
    collectedAt: '2026-12-03T12:00:00.000Z',
    host: {
      hostname: 'h',
      machineId: null,
      kernelRelease: '6.12.0',
      cpuVendor: 'intel',
      virtualMachine: false,
      cmdline: {
        intelIommu: 'on',
        amdIommu: null,
        iommu: null,
        iommuPassthrough: null,
        pcieAcsOverride: null,
        vfioPciIds: [],
        raw: 'intel_iommu=on',
      },
      iommu: { enabled: true, units: ['dmar0'], groupCount: 5, interruptRemapping: 'enabled' },
      vfio: { modulesLoaded: ['vfio_pci'], devNodes: ['vfio'] },
      modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
      pciIdsPath: null,
      critical: [{ address: ADDRESSES[3] ?? '', kind: 'root-disk', detail: 'nvme0n1' }],
    },
    devices,
    groups,
    problems: [],
  };
}

const hostArb = fc
  .tuple(
    fc.array(fc.option(shapeArb, { freq: 4 }), {
      minLength: ADDRESSES.length,
      maxLength: ADDRESSES.length,
    }),
    // Listing quirks: each entry moves one address into another group's listing.
    fc.array(fc.tuple(fc.nat(ADDRESSES.length - 1), fc.integer({ min: 0, max: 4 })), {
      maxLength: 2,
    }),
  )
  .map(([shapes, quirks]) => {
    const devices = shapes.flatMap((shape, i) => {
      const address = ADDRESSES[i];
      return shape === null || address === undefined ? [] : [device(address, shape)];
    });
    const listing = new Map<number, string[]>();
    for (const d of devices) {
      if (d.iommuGroup === null) continue;
      const list = listing.get(d.iommuGroup) ?? [];
      list.push(d.address);
      listing.set(d.iommuGroup, list);
    }
    for (const [index, group] of quirks) {
      const address = ADDRESSES[index];
      if (address === undefined) continue;
      const list = listing.get(group) ?? [];
      if (!list.includes(address)) list.push(address);
      listing.set(group, list);
    }
    const groups = [...listing].map(([id, members]) => ({ id, devices: members.sort() }));
    return snapshot(
      devices,
      groups.sort((a, b) => a.id - b.id),
    );
  });

/** A delta against `base`: each address is removed, changed, added or left alone. */
function deltaArb(base: HostFactsSnapshot): fc.Arbitrary<SnapshotDelta> {
  const present = new Set(base.devices.map((d) => d.address));
  return fc
    .array(fc.tuple(fc.constantFrom('keep', 'keep', 'change', 'remove'), shapeArb), {
      minLength: ADDRESSES.length,
      maxLength: ADDRESSES.length,
    })
    .map((plan) => {
      const delta: SnapshotDelta = { devicesAdded: [], devicesChanged: [], devicesRemoved: [] };
      plan.forEach(([action, shape], i) => {
        const address = ADDRESSES[i];
        if (address === undefined || action === 'keep') return;
        const next = { ...device(address, shape), readiness: { status: 'ready', reasons: [] } };
        if (!present.has(address)) delta.devicesAdded.push(next as never);
        else if (action === 'remove') delta.devicesRemoved.push(address);
        else delta.devicesChanged.push(next as never);
      });
      return delta;
    });
}

const linksOf = (d: DeviceFacts): DeviceLinks => ({
  address: d.address,
  iommuGroup: d.iommuGroup,
  parent: d.parent,
  kind: d.kind,
});

describe('deltaScope', () => {
  it('gives every re-assessed device its whole-host verdict, and leaves no other verdict changed', () => {
    fc.assert(
      fc.property(
        hostArb.chain((base) => fc.tuple(fc.constant(base), deltaArb(base))),
        ([base, delta]) => {
          const scope = deltaScope(base.devices.map(linksOf), base.groups, delta);
          if (scope === null) throw new Error('a device-only delta has a scope');
          const before = assessSnapshot(base);
          const full = assessSnapshot(applyDelta(before, delta, base.collectedAt));
          const verdictsBefore = new Map(before.devices.map((d) => [d.address, d.readiness]));

          const partialBase = {
            ...before,
            devices: before.devices.filter((d) => scope.load.has(d.address)),
            groups: before.groups.filter((g) => scope.groups.has(g.id)),
          };
          const partial = assessSnapshot(applyDelta(partialBase, delta, base.collectedAt));
          const partialVerdicts = new Map(partial.devices.map((d) => [d.address, d.readiness]));

          for (const d of full.devices) {
            if (scope.reassess.has(d.address)) {
              expect(partialVerdicts.get(d.address), d.address).toEqual(d.readiness);
            } else {
              expect(verdictsBefore.get(d.address), d.address).toEqual(d.readiness);
            }
          }
          // Nothing outside the host is asked for.
          for (const address of scope.load) {
            expect(base.devices.some((d) => d.address === address)).toBe(true);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('loads a handful of devices for a one-device change on a large host', () => {
    const shapes = Array.from({ length: 200 }, (_, i) => ({
      address: `0000:${(i >> 3).toString(16).padStart(2, '0')}:00.${i & 7}`,
      iommuGroup: i >> 1,
      parent: null,
      kind: 'endpoint' as const,
    }));
    const [first] = shapes;
    if (first === undefined) throw new Error('no device');
    const changed = {
      ...device(first.address, {
        driver: 'vfio-pci',
        group: 0,
        parent: null,
        bridge: false,
        bootVga: false,
      }),
      readiness: { status: 'ready' as const, reasons: [] },
    };
    const scope = deltaScope(shapes, [], {
      devicesAdded: [],
      devicesChanged: [changed],
      devicesRemoved: [],
    });
    expect(scope?.reassess.size).toBe(2);
    expect(scope?.load.size).toBe(2);
  });

  it('has no scope when the host section, the groups or the problems change', () => {
    const base = { devicesAdded: [], devicesChanged: [], devicesRemoved: [] };
    expect(deltaScope([], [], { ...base, problems: [] })).toBeNull();
    expect(deltaScope([], [], { ...base, groups: [] })).toBeNull();
  });
});
