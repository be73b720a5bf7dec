import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ParseError } from '../src/errors';
import type { Device, Host, HostSnapshot, IommuGroup, Problem } from '../src/inventory/schema';
import { comparePciAddresses } from '../src/pci/address';
import {
  applyDelta,
  diffSnapshots,
  type SnapshotDelta,
  snapshotDeltaSchema,
  stableEqual,
} from '../src/protocol/delta';
import { encodeMessage, parseAgentMessage } from '../src/protocol/messages';

// ---------------------------------------------------------------------------------------------
// Builders: valid devices and snapshots, with the fields that change on a real host varied.

interface DeviceFields {
  driver: string | null;
  driverOverride: string | null;
  iommuGroup: number | null;
  numaNode: number | null;
  netInterfaces: string[];
  vendorName: string | null;
  status: Device['readiness']['status'];
  reasonCodes: string[];
  vfio: boolean;
}

function device(address: string, f: Partial<DeviceFields> = {}): Device {
  const status = f.status ?? 'ready';
  return {
    address,
    vendorId: '15b3',
    deviceId: '101e',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: '020000',
    revision: '00',
    modalias: 'pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00i00',
    driver: f.driver ?? null,
    driverModule: f.driver ?? null,
    driverOverride: f.driverOverride ?? null,
    iommuGroup: f.iommuGroup === undefined ? 1 : f.iommuGroup,
    numaNode: f.numaNode ?? null,
    kind: 'endpoint',
    parent: null,
    sriov: null,
    physfn: null,
    resetMethods: ['flr'],
    resettable: true,
    bootVga: false,
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: f.netInterfaces ?? [],
    names: { vendor: f.vendorName ?? null, device: null, subsystem: null, className: 'Ethernet' },
    vfio:
      f.vfio === false
        ? null
        : {
            module: 'mlx5_vfio_pci',
            driver: 'mlx5_vfio_pci',
            driverSource: 'convention',
            source: 'alias',
            ambiguous: false,
            candidates: [
              {
                pattern: 'vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*',
                module: 'mlx5_vfio_pci',
                wildcards: 4,
                line: 7,
              },
            ],
            explanation: 'matched',
          },
    vfioDriver: f.vfio === false ? null : 'mlx5_vfio_pci',
    readiness: {
      status,
      reasons: (f.reasonCodes ?? []).map((code) => ({
        code,
        severity: status === 'blocked' ? 'error' : 'warning',
        message: `${address}: ${code}`,
        remedy: null,
        related: [],
      })),
    },
  };
}

function host(fields: Partial<Host> = {}): Host {
  return {
    hostname: 'gpu-17',
    machineId: null,
    kernelRelease: '6.8.0',
    cpuVendor: 'amd',
    virtualMachine: false,
    cmdline: {
      intelIommu: null,
      amdIommu: 'on',
      iommu: 'pt',
      iommuPassthrough: null,
      pcieAcsOverride: null,
      vfioPciIds: [],
      raw: 'amd_iommu=on iommu=pt',
    },
    iommu: { enabled: true, units: ['ivhd0'], groupCount: 2, interruptRemapping: 'enabled' },
    vfio: { modulesLoaded: ['vfio'], devNodes: ['vfio'] },
    modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
    pciIdsPath: null,
    critical: [],
    ...fields,
  };
}

function snapshot(devices: Device[], fields: Partial<HostSnapshot> = {}): HostSnapshot {
  return {
    schemaVersion: 1,
    collectedAt: '2026-11-23T13:00:00.000Z',
    host: host(),
    devices,
    groups: [{ id: 1, devices: devices.map((d) => d.address) }],
    problems: [],
    ...fields,
  };
}

const NO_CHANGE: SnapshotDelta = { devicesAdded: [], devicesChanged: [], devicesRemoved: [] };

// --- arbitraries ------------------------------------------------------------------------------

const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
/** Domains 0, 1 and 0x10000 (VMD), so string order and numeric order differ. */
const addressArb = fc
  .tuple(
    fc.constantFrom(0, 1, 0x10000),
    fc.integer({ min: 0, max: 255 }),
    fc.integer({ min: 0, max: 31 }),
    fc.integer({ min: 0, max: 7 }),
  )
  .map(([d, b, s, f]) => `${hex(d, 4)}:${hex(b, 2)}:${hex(s, 2)}.${f}`);

const fieldsArb: fc.Arbitrary<DeviceFields> = fc.record({
  driver: fc.constantFrom(null, 'mlx5_core', 'vfio-pci', 'mlx5_vfio_pci'),
  driverOverride: fc.constantFrom(null, 'vfio-pci'),
  iommuGroup: fc.option(fc.integer({ min: 0, max: 3 })),
  numaNode: fc.option(fc.integer({ min: 0, max: 1 })),
  netInterfaces: fc.array(fc.constantFrom('eth0', 'ens1f0', 'ens1f1'), { maxLength: 2 }),
  vendorName: fc.option(fc.constantFrom('Mellanox Technologies', 'NVIDIA Corporation')),
  status: fc.constantFrom('bound', 'ready', 'blocked'),
  reasonCodes: fc.uniqueArray(fc.constantFrom('shared-group', 'no-reset', 'host-critical'), {
    maxLength: 2,
  }),
  vfio: fc.boolean(),
});

const hostArb: fc.Arbitrary<Host> = fc
  .record({
    hostname: fc.constantFrom('gpu-17', 'gpu-17.dc1'),
    kernelRelease: fc.option(fc.constantFrom('6.8.0', '6.11.2')),
    modulesLoaded: fc.subarray(['vfio', 'vfio_pci', 'mlx5_vfio_pci']),
    enabled: fc.boolean(),
  })
  .map(({ hostname, kernelRelease, modulesLoaded, enabled }) => {
    const base = host();
    return host({
      hostname,
      kernelRelease,
      vfio: { ...base.vfio, modulesLoaded },
      iommu: { ...base.iommu, enabled },
    });
  });

const problemsArb: fc.Arbitrary<Problem[]> = fc.subarray([
  { source: '/lib/modules', message: 'modules.alias not found' },
  { source: 'pci.ids', message: 'pci.ids not found' },
]);

/** Per address: in the base, in the next, and the device on each side (often the same one). */
const slotArb = fc.record({
  inBase: fc.boolean(),
  inNext: fc.boolean(),
  base: fieldsArb,
  next: fieldsArb,
  same: fc.boolean(),
});

function groupsOf(devices: Device[]): IommuGroup[] {
  const groups = new Map<number, string[]>();
  for (const d of devices) {
    if (d.iommuGroup !== null)
      groups.set(d.iommuGroup, [...(groups.get(d.iommuGroup) ?? []), d.address]);
  }
  return [...groups].sort(([a], [b]) => a - b).map(([id, members]) => ({ id, devices: members }));
}

const pairArb: fc.Arbitrary<[HostSnapshot, HostSnapshot]> = fc
  .record({
    addresses: fc.uniqueArray(addressArb, { maxLength: 16 }),
    slots: fc.array(slotArb, { minLength: 16, maxLength: 16 }),
    hostA: hostArb,
    hostB: fc.option(hostArb),
    problemsA: problemsArb,
    problemsB: fc.option(problemsArb),
  })
  .map(({ addresses, slots, hostA, hostB, problemsA, problemsB }) => {
    const a: Device[] = [];
    const b: Device[] = [];
    addresses.forEach((address, i) => {
      const slot = slots[i];
      if (slot === undefined) return;
      const baseDevice = device(address, slot.base);
      if (slot.inBase) a.push(baseDevice);
      if (slot.inNext) b.push(slot.inBase && slot.same ? baseDevice : device(address, slot.next));
    });
    // Agents list devices in address order; base order is left as generated (applyDelta sorts).
    b.sort((x, y) => comparePciAddresses(x.address, y.address));
    const base = snapshot(a, { host: hostA, groups: groupsOf(a), problems: problemsA });
    const next = snapshot(b, {
      collectedAt: '2026-11-23T13:00:30.000Z',
      host: hostB ?? hostA,
      groups: groupsOf(b),
      problems: problemsB ?? problemsA,
    });
    return [base, next];
  });

function withoutTime(s: HostSnapshot): Omit<HostSnapshot, 'collectedAt'> {
  const { collectedAt: _, ...rest } = s;
  return rest;
}

function inAddressOrder<T extends { devices: Device[] }>(s: T): T {
  return {
    ...s,
    devices: [...s.devices].sort((x, y) => comparePciAddresses(x.address, y.address)),
  };
}

// ---------------------------------------------------------------------------------------------

describe('stableEqual', () => {
  it('ignores key order, not array order', () => {
    expect(stableEqual({ a: 1, b: [1, 2] }, { b: [1, 2], a: 1 })).toBe(true);
    expect(stableEqual([1, 2], [2, 1])).toBe(false);
  });

  it('tells apart what JSON tells apart', () => {
    expect(stableEqual(null, {})).toBe(false);
    expect(stableEqual([], {})).toBe(false);
    expect(stableEqual({ a: null }, {})).toBe(false);
    expect(stableEqual({ a: 1 }, { b: 1 })).toBe(false);
    expect(stableEqual('1', 1)).toBe(false);
    expect(stableEqual({ a: { b: [{ c: 'x' }] } }, { a: { b: [{ c: 'y' }] } })).toBe(false);
  });

  it('ignores undefined-valued keys, as JSON does', () => {
    expect(stableEqual({ a: 1, b: undefined }, { a: 1 })).toBe(true);
    expect(stableEqual({ a: undefined }, { b: undefined })).toBe(true);
  });

  it('agrees with comparing canonical JSON (sorted keys)', () => {
    const canonical = (v: unknown): string =>
      JSON.stringify(v, (_, x: unknown) =>
        x !== null && typeof x === 'object' && !Array.isArray(x)
          ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0)))
          : x,
      );
    const small = fc.jsonValue({ maxDepth: 3 });
    fc.assert(
      fc.property(small, small, (x, y) => {
        expect(stableEqual(x, y)).toBe(canonical(x) === canonical(y));
        expect(stableEqual(x, JSON.parse(JSON.stringify(x)))).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe('diffSnapshots', () => {
  const nic = device('0000:3b:00.0', { driver: 'mlx5_core' });
  const base = snapshot([nic, device('0000:3b:00.1')]);

  it('is null when only collectedAt changed', () => {
    expect(diffSnapshots(base, { ...base, collectedAt: '2026-11-23T14:00:00.000Z' })).toBeNull();
  });

  it('is null for a structurally equal copy with keys in another order', () => {
    const copy = JSON.parse(JSON.stringify(base)) as HostSnapshot;
    const reverse = <T extends object>(o: T): T =>
      Object.fromEntries(Object.entries(o).reverse()) as T;
    const reordered = reverse({ ...copy, host: reverse(copy.host) });
    expect(Object.keys(reordered)[0]).toBe('problems');
    expect(diffSnapshots(base, reordered)).toBeNull();
  });

  it('sends only the device that changed, in full', () => {
    const bound = device('0000:3b:00.0', { driver: 'vfio-pci', driverOverride: 'vfio-pci' });
    expect(diffSnapshots(base, snapshot([bound, device('0000:3b:00.1')]))).toEqual({
      devicesAdded: [],
      devicesChanged: [bound],
      devicesRemoved: [],
    });
  });

  it('sends host, groups and problems whole, and only when they changed', () => {
    const next = snapshot(base.devices, {
      host: host({ kernelRelease: '6.11.2' }),
      problems: [{ source: 'pci.ids', message: 'not found' }],
    });
    expect(diffSnapshots(base, next)).toEqual({
      host: next.host,
      problems: next.problems,
      devicesAdded: [],
      devicesChanged: [],
      devicesRemoved: [],
    });
  });

  it('lists added and removed devices in numeric address order', () => {
    const vmd = device('10000:01:00.0');
    const low = device('2000:01:00.0');
    const a = snapshot([]);
    const delta = diffSnapshots(a, snapshot([vmd, low]));
    expect(delta?.devicesAdded.map((d) => d.address)).toEqual(['2000:01:00.0', '10000:01:00.0']);
    const back = diffSnapshots(snapshot([vmd, low]), a);
    expect(back?.devicesRemoved).toEqual(['2000:01:00.0', '10000:01:00.0']);
  });
});

describe('applyDelta', () => {
  const a = device('0000:3b:00.0');
  const b = device('0000:3b:00.1');
  const base = snapshot([a, b]);

  it('stamps the given collectedAt and changes nothing else for an empty delta', () => {
    const out = applyDelta(base, NO_CHANGE, '2026-11-23T15:00:00.000Z');
    expect(out).toEqual({ ...base, collectedAt: '2026-11-23T15:00:00.000Z' });
  });

  it('does not mutate the base', () => {
    const frozen = structuredClone(base);
    applyDelta(
      base,
      { ...NO_CHANGE, devicesRemoved: [a.address], devicesAdded: [device('0000:00:02.0')] },
      'now',
    );
    expect(base).toEqual(frozen);
  });

  it('keeps devices in address order whatever order the delta lists them in', () => {
    const out = applyDelta(
      base,
      {
        ...NO_CHANGE,
        devicesAdded: [device('10000:00:00.0'), device('0000:00:1f.0'), device('2000:00:00.0')],
      },
      'now',
    );
    expect(out.devices.map((d) => d.address)).toEqual([
      '0000:00:1f.0',
      '0000:3b:00.0',
      '0000:3b:00.1',
      '2000:00:00.0',
      '10000:00:00.0',
    ]);
  });

  it.each([
    ['adds a device the base has', { ...NO_CHANGE, devicesAdded: [a] }],
    ['changes a device the base lacks', { ...NO_CHANGE, devicesChanged: [device('0000:00:02.0')] }],
    ['removes a device the base lacks', { ...NO_CHANGE, devicesRemoved: ['0000:00:02.0'] }],
  ] satisfies Array<[string, SnapshotDelta]>)(
    'throws ParseError when the delta %s (the server then asks for a resync)',
    (_, delta) => {
      expect(() => applyDelta(base, delta, 'now')).toThrow(ParseError);
    },
  );
});

describe('round trip (property)', () => {
  it('applyDelta(a, diffSnapshots(a, b)) equals b, but for collectedAt', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const delta = diffSnapshots(a, b) ?? NO_CHANGE;
        expect(applyDelta(a, delta, b.collectedAt)).toEqual(b);
      }),
      { numRuns: 300 },
    );
  });

  it('the diff is null exactly when nothing but collectedAt differs', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        // Device order is not content: the base is left unsorted (see pairArb), and a base whose
        // only difference is order (domain 10000 listed before 0000) has nothing to send.
        expect(diffSnapshots(a, b) === null).toBe(
          stableEqual(inAddressOrder(withoutTime(a)), inAddressOrder(withoutTime(b))),
        );
        expect(diffSnapshots(b, { ...b, collectedAt: 'later' })).toBeNull();
      }),
      { numRuns: 300 },
    );
  });

  it('every diff is valid on the wire and still applies after encode → parse', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const delta = diffSnapshots(a, b);
        if (delta === null) return;
        expect(snapshotDeltaSchema.safeParse(delta).success).toBe(true);
        const parsed = parseAgentMessage(
          encodeMessage({ type: 'delta', epoch: 'e1', baseSeq: 4, seq: 5, delta }),
        );
        if (!parsed.ok || parsed.message.type !== 'delta') throw new Error('delta did not parse');
        expect(applyDelta(a, parsed.message.delta, b.collectedAt)).toEqual(b);
      }),
      { numRuns: 200 },
    );
  });

  it('the diff carries only what changed', () => {
    fc.assert(
      fc.property(pairArb, ([a, b]) => {
        const delta = diffSnapshots(a, b);
        if (delta === null) return;
        const before = new Map(a.devices.map((d) => [d.address, d]));
        for (const d of delta.devicesChanged) {
          expect(stableEqual(before.get(d.address), d)).toBe(false);
        }
        for (const d of delta.devicesAdded) expect(before.has(d.address)).toBe(false);
        expect(delta.host === undefined).toBe(stableEqual(a.host, b.host));
        expect(delta.groups === undefined).toBe(stableEqual(a.groups, b.groups));
        expect(delta.problems === undefined).toBe(stableEqual(a.problems, b.problems));
      }),
      { numRuns: 200 },
    );
  });
});
