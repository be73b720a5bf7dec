// Group-wide readiness at scale and with members the agent could not read: what a reason says
// about its group is bounded (a group can hold a whole host), and a member that is not in
// `devices` still counts, so its group is blocked and never planned.
import { describe, expect, it } from 'vitest';
import {
  type DeviceFacts,
  type HostFactsSnapshot,
  type HostSnapshot,
  hostSnapshotSchema,
  INVENTORY_SCHEMA_VERSION,
  type Problem,
} from '../src/inventory/schema';
import { planRebind } from '../src/plan/plan-rebind';
import { assessSnapshot, assessSnapshotInSlices } from '../src/readiness/assess';
import {
  MAX_NAMED_DEVICES,
  MAX_QUOTED_TEXT,
  MAX_REASON_TEXT,
  MAX_RELATED_DEVICES,
} from '../src/readiness/bounded-text';
import { AUDIO, audio, GPU, makeDevice, makeHost } from './readiness-fixtures';

function snapshotOf(
  devices: DeviceFacts[],
  groups: HostFactsSnapshot['groups'],
  problems: Problem[] = [],
  host = makeHost(),
): HostFactsSnapshot {
  return {
    schemaVersion: INVENTORY_SCHEMA_VERSION,
    collectedAt: '2026-01-01T00:00:00.000Z',
    host,
    devices,
    groups,
    problems,
  };
}

/** `n` endpoints (VFs of a NIC without ACS, say) all in IOMMU group 7. */
function bigGroup(n: number, driver = 'mlx5_core'): HostFactsSnapshot {
  const devices = Array.from({ length: n }, (_, i) =>
    makeDevice(
      `0000:${(0x40 + (i >> 8)).toString(16)}:${((i >> 3) & 0x1f).toString(16).padStart(2, '0')}.${i & 7}`,
      {
        iommuGroup: 7,
        driver,
        driverModule: driver,
        names: {
          vendor: 'Mellanox',
          device: 'ConnectX Family mlx5Gen Virtual Function',
          subsystem: null,
          className: 'Ethernet controller',
        },
      },
    ),
  );
  return snapshotOf(devices, [{ id: 7, devices: devices.map((d) => d.address) }]);
}

function reasonBytes(snapshot: HostSnapshot): number {
  return snapshot.devices.reduce(
    (sum, d) => sum + Buffer.byteLength(JSON.stringify(d.readiness.reasons)),
    0,
  );
}

describe('reasons about a large IOMMU group', () => {
  it('grow linearly with the group: 1,000 endpoints in one group', () => {
    const n = 1000;
    const assessed = assessSnapshot(bigGroup(n));
    // Before, every member listed every other one: about 60 KB of reasons each, 60 MB in all.
    expect(reasonBytes(assessed)).toBeLessThan(1500 * n);
    for (const device of assessed.devices) {
      for (const reason of device.readiness.reasons) {
        expect(reason.message.length).toBeLessThanOrEqual(MAX_REASON_TEXT);
        expect(reason.related.length).toBeLessThanOrEqual(MAX_RELATED_DEVICES);
      }
    }
    const shared = assessed.devices[0]?.readiness.reasons.find((r) => r.code === 'group-shared');
    expect(shared?.message).toMatch(
      new RegExp(
        `^IOMMU group 7 also holds 0000:40:00\\.1 \\(ConnectX.*and ${n - 1 - MAX_NAMED_DEVICES} more \\(${n} endpoints in all\\)`,
      ),
    );
    expect(shared?.related).toHaveLength(MAX_RELATED_DEVICES);
    expect(hostSnapshotSchema.safeParse(assessed).success).toBe(true);
  });

  it('name a few host-driver members and count the rest (group-not-viable)', () => {
    const facts = bigGroup(300, 'mlx5_core');
    const first = facts.devices[0];
    if (first === undefined) throw new Error('no device');
    facts.devices[0] = { ...first, driver: 'vfio-pci', driverModule: 'vfio_pci' };
    const reason = assessSnapshot(facts).devices[0]?.readiness.reasons.find(
      (r) => r.code === 'group-not-viable',
    );
    expect(reason?.message).toContain(`and ${299 - MAX_NAMED_DEVICES} more`);
    expect(reason?.remedy).toContain(`and ${299 - MAX_NAMED_DEVICES} more as well`);
    expect(reason?.related).toHaveLength(MAX_RELATED_DEVICES);
  });

  it('quote a string a peer made long (a 4 KB critical detail) clipped', () => {
    const gpu = makeDevice(GPU);
    const host = makeHost({
      critical: [{ address: GPU, kind: 'root-disk', detail: 'x'.repeat(4096) }],
    });
    const assessed = assessSnapshot(snapshotOf([gpu], [{ id: 1, devices: [GPU] }], [], host));
    const reason = assessed.devices[0]?.readiness.reasons[0];
    expect(reason?.code).toBe('host-critical');
    expect(reason?.message).toContain(`(${'x'.repeat(MAX_QUOTED_TEXT - 1)}…)`);
    expect(reason?.message.length).toBeLessThan(MAX_QUOTED_TEXT + 100);
  });
});

describe('assessSnapshotInSlices', () => {
  it('pauses between slices and gives what assessSnapshot gives', () => {
    const facts = bigGroup(1100);
    const slices = assessSnapshotInSlices(facts, 500);
    let pauses = 0;
    for (;;) {
      const step = slices.next();
      if (step.done === true) {
        expect(step.value).toEqual(assessSnapshot(facts));
        break;
      }
      pauses += 1;
    }
    expect(pauses).toBe(2);
  });
});

describe('group-member-unreadable', () => {
  const group = { id: 1, devices: [GPU, AUDIO] };

  it('blocks the readable members of a group whose listing names a device the agent left out', () => {
    // An agent before problems[].device: the member is only in the listing and a problem's source.
    const problems = [
      {
        source: `/sys/bus/pci/devices/${AUDIO}`,
        message: `skipped ${AUDIO}: vendor, device or class unreadable`,
      },
    ];
    const gpu = makeDevice(GPU);
    const assessed = assessSnapshot(snapshotOf([gpu], [group], problems));
    const readiness = assessed.devices[0]?.readiness;
    expect(readiness?.status).toBe('blocked');
    expect(readiness?.reasons[0]).toEqual({
      code: 'group-member-unreadable',
      severity: 'error',
      message: `IOMMU group 1 also holds ${AUDIO} (skipped ${AUDIO}: vendor, device or class unreadable), whose sysfs files could not be read: what it is and what it does for the host is unknown, and vfio would move it with ${GPU}, so no member of the group may move.`,
      remedy: `Check the device with \`lspci -vvv -s ${AUDIO}\` and \`dmesg\` (a function whose files read as garbage has usually fallen off the bus or has a firmware fault); fix, reseat or remove it, or reboot, then let the agent scan again.`,
      related: [AUDIO],
    });
  });

  it('names the driver and what was wrong when the agent reports them, and blocks a member already on vfio', () => {
    const problems: Problem[] = [
      {
        source: `/sys/bus/pci/devices/${AUDIO}`,
        message: 'vendor reads "zzz"; class is missing or unreadable',
        device: { address: AUDIO, iommuGroup: 1, driver: 'snd_hda_intel' },
      },
    ];
    const gpu = makeDevice(GPU, { driver: 'vfio-pci', driverModule: 'vfio_pci' });
    // Not in the listing at all: the problem's group still places it.
    const assessed = assessSnapshot(snapshotOf([gpu], [{ id: 1, devices: [GPU] }], problems));
    const readiness = assessed.devices[0]?.readiness;
    expect(readiness?.status).toBe('blocked');
    expect(readiness?.reasons[0]?.message).toContain(
      `${AUDIO} on snd_hda_intel (vendor reads "zzz"; class is missing or unreadable)`,
    );
  });

  it('says "the agent reported no facts" when nothing describes the member, and leaves other groups alone', () => {
    const other = makeDevice('0000:02:00.0', { iommuGroup: 2 });
    const assessed = assessSnapshot(
      snapshotOf([makeDevice(GPU), other], [group, { id: 2, devices: ['0000:02:00.0'] }]),
    );
    expect(assessed.devices[0]?.readiness.reasons[0]?.message).toContain(
      `${AUDIO} (the agent reported no facts for it)`,
    );
    expect(assessed.devices[1]?.readiness).toEqual({ status: 'ready', reasons: [] });
  });

  it('names a few of many unreadable members, so the reasons stay linear', () => {
    const n = 1000;
    const facts = bigGroup(n);
    const hex = (v: number) => v.toString(16).padStart(2, '0');
    const missing = Array.from(
      { length: n },
      (_, i) => `0001:${hex(i >> 8)}:${hex((i >> 3) & 0x1f)}.${i & 7}`,
    );
    facts.groups = [{ id: 7, devices: [...(facts.groups[0]?.devices ?? []), ...missing] }];
    const assessed = assessSnapshot(facts);
    expect(reasonBytes(assessed)).toBeLessThan(3000 * n);
    const reason = assessed.devices[0]?.readiness.reasons[0];
    expect(reason?.code).toBe('group-member-unreadable');
    expect(reason?.message).toContain(`and ${n - MAX_NAMED_DEVICES} more, whose sysfs files`);
    expect(reason?.related).toHaveLength(MAX_RELATED_DEVICES);
  });

  it('is not raised when every listed member was read', () => {
    const assessed = assessSnapshot(snapshotOf([makeDevice(GPU), audio(AUDIO)], [group]));
    for (const device of assessed.devices) {
      expect(device.readiness.reasons.map((r) => r.code)).not.toContain('group-member-unreadable');
    }
  });
});

describe('planRebind with an unreadable group member', () => {
  it('refuses the group in both directions, naming the member', () => {
    const problems: Problem[] = [
      {
        source: `/sys/bus/pci/devices/${AUDIO}`,
        message: 'vendor reads "zzz"',
        device: { address: AUDIO, iommuGroup: 1, driver: null },
      },
    ];
    const snapshot = assessSnapshot(
      snapshotOf(
        [makeDevice(GPU, { driver: 'vfio-pci' })],
        [{ id: 1, devices: [GPU, AUDIO] }],
        problems,
      ),
    );
    for (const target of ['vfio', 'host'] as const) {
      const result = planRebind(snapshot, GPU, target);
      expect(result).toMatchObject({
        ok: false,
        refusal: {
          code: 'group-unreadable',
          message: `IOMMU group 1 of ${GPU} is not planned: ${AUDIO} (vendor reads "zzz") is a member whose sysfs files could not be read, so what moving the group would do to the host cannot be known`,
          reasons: [{ code: 'group-member-unreadable' }],
        },
      });
    }
  });
});
