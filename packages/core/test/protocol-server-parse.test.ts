// parseAgentMessageForServer: the server's parse of agent frames, which drops a snapshot's
// readiness unvalidated (the server re-assesses) and checks everything else as parseAgentMessage.
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { Device, HostFactsSnapshot, HostSnapshot } from '../src/inventory/schema';
import {
  type FactsSnapshotMessage,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  MAX_WIRE_DEVICES,
  type ParsedMessage,
  parseAgentMessage,
  parseAgentMessageForServer,
} from '../src/protocol/messages';

function device(address: string, group: number): Device {
  return {
    address,
    vendorId: '10de',
    deviceId: '2330',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: '030200',
    revision: null,
    modalias: null,
    driver: 'nvidia',
    driverModule: 'nvidia',
    driverOverride: null,
    iommuGroup: group,
    numaNode: null,
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
    netInterfaces: [],
    names: { vendor: null, device: null, subsystem: null, className: '3D controller' },
    vfio: null,
    vfioDriver: null,
    readiness: {
      status: 'blocked',
      reasons: [
        {
          code: 'shared-group',
          severity: 'error',
          message: 'shares its group',
          remedy: null,
          related: ['0000:3b:00.1'],
        },
      ],
    },
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
    devices: [device('0000:3b:00.0', 1), device('0000:3b:00.1', 1)],
    groups: [{ id: 1, devices: ['0000:3b:00.0', '0000:3b:00.1'] }],
    problems: [],
  };
}

function frame(snap: unknown): string {
  return JSON.stringify({ type: 'snapshot', epoch: 'e-1', seq: 3, snapshot: snap });
}

function failure<T>(parsed: ParsedMessage<T>) {
  if (parsed.ok) throw new Error('expected a failure');
  return parsed.error;
}

describe('parseAgentMessageForServer', () => {
  it('returns a snapshot’s devices without readiness, everything else as parseAgentMessage', () => {
    const raw = frame(snapshot());
    const full = parseAgentMessage(raw);
    const server = parseAgentMessageForServer(raw);
    if (!full.ok || full.message.type !== 'snapshot') throw new Error('full parse failed');
    if (!server.ok || server.message.type !== 'snapshot') throw new Error('server parse failed');
    expect(server.message.snapshot.devices.every((d) => !('readiness' in d))).toBe(true);
    expect(server.message).toEqual({
      ...full.message,
      snapshot: {
        ...full.message.snapshot,
        devices: full.message.snapshot.devices.map(({ readiness: _r, ...facts }) => facts),
      },
    });
    // The same key order as the full parse, so both hash alike where the server hashes JSON text.
    expect(JSON.stringify(server.message.snapshot.devices[0])).toBe(
      JSON.stringify(full.message.snapshot.devices.map(({ readiness: _r, ...f }) => f)[0]),
    );
    expectTypeOf<FactsSnapshotMessage['snapshot']>().toEqualTypeOf<HostFactsSnapshot>();
  });

  it('does not validate the readiness it drops, and still validates every fact', () => {
    const snap = snapshot() as unknown as { devices: Record<string, unknown>[] };
    for (const d of snap.devices) d.readiness = { status: 'splendid', reasons: 'x'.repeat(10) };
    expect(failure(parseAgentMessage(frame(snap))).code).toBe('invalid');
    expect(parseAgentMessageForServer(frame(snap)).ok).toBe(true);

    const bad = snapshot() as unknown as { devices: Record<string, unknown>[] };
    const first = bad.devices[0];
    if (first) first.vendorId = 'NVIDIA';
    expect(failure(parseAgentMessageForServer(frame(bad))).message).toMatch(
      /^snapshot\.devices\[0\]\.vendorId: /,
    );
  });

  it('refuses a snapshot that lists one address twice', () => {
    const dup = snapshot();
    const first = dup.devices[0];
    if (first) dup.devices.push(first);
    expect(failure(parseAgentMessageForServer(frame(dup))).message).toMatch(
      /^snapshot\.devices\[2\]\.address: .*more than once/,
    );
  });

  it('refuses a group listing that names an address twice or more than MAX_WIRE_DEVICES in all', () => {
    const twice = snapshot();
    twice.groups.push({ id: 2, devices: ['0000:3b:00.1'] });
    expect(failure(parseAgentMessageForServer(frame(twice))).message).toBe(
      'snapshot.groups[1].devices: 0000:3b:00.1 is listed in more than one IOMMU group',
    );
    const many = snapshot();
    const addresses = (from: number) =>
      Array.from({ length: 2100 }, (_, i) => {
        const n = from + i;
        return `0000:${(n >> 8).toString(16).padStart(2, '0')}:${((n >> 3) & 0x1f).toString(16).padStart(2, '0')}.${n & 7}`;
      });
    many.groups = [
      { id: 1, devices: addresses(0) },
      { id: 2, devices: addresses(2100) },
    ];
    expect(failure(parseAgentMessageForServer(frame(many))).message).toBe(
      `snapshot.groups[1].devices: the IOMMU groups list more than ${MAX_WIRE_DEVICES} devices in all`,
    );
    // A delta's listing likewise.
    const delta = {
      type: 'delta',
      epoch: 'e-1',
      baseSeq: 3,
      seq: 4,
      delta: { groups: twice.groups, devicesAdded: [], devicesChanged: [], devicesRemoved: [] },
    };
    expect(failure(parseAgentMessageForServer(JSON.stringify(delta))).message).toBe(
      'delta.groups[1].devices: 0000:3b:00.1 is listed in more than one IOMMU group',
    );
  });

  it('checks the size before parsing, with the same bounds', () => {
    const huge = `{"type":"snapshot","pad":"${'x'.repeat(MAX_SNAPSHOT_MESSAGE_BYTES)}"}`;
    expect(failure(parseAgentMessageForServer(huge)).code).toBe('too-large');
    expect(failure(parseAgentMessageForServer(Buffer.from(huge))).code).toBe('too-large');
    const control = `{"type":"ping","nonce":"n","pad":"${'x'.repeat(70_000)}"}`;
    expect(failure(parseAgentMessageForServer(control)).code).toBe('too-large');
  });

  it('parses the other messages exactly as parseAgentMessage (deltas keep readiness)', () => {
    const delta = JSON.stringify({
      type: 'delta',
      epoch: 'e-1',
      baseSeq: 3,
      seq: 4,
      delta: { devicesAdded: [], devicesChanged: [device('0000:3b:00.0', 1)], devicesRemoved: [] },
    });
    const ping = JSON.stringify({ type: 'ping', nonce: 'n-1', sentAt: '2026-11-23T13:00:00.000Z' });
    for (const raw of [delta, ping, '{"type":"nope"}', 'not json']) {
      expect(parseAgentMessageForServer(raw)).toEqual(parseAgentMessage(raw));
    }
  });
});
