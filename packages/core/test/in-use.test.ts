// A device a VM holds: its readiness says so, and no plan may unbind, move or remove it.
import { describe, expect, it } from 'vitest';
import type { DeviceFacts, HostFactsSnapshot } from '../src/inventory/schema';
import { planRebind } from '../src/plan/plan-rebind';
import { assessSnapshot } from '../src/readiness/assess';
import { describeHolder } from '../src/readiness/holder';
import { AUDIO, audio, GPU, makeDevice, makeHost, rootPort } from './readiness-fixtures';

const QEMU = { pid: 4242, command: 'qemu-system-x86', vm: 'web-1' };

function facts(...devices: DeviceFacts[]): HostFactsSnapshot {
  const groups = new Map<number, string[]>();
  for (const d of devices) {
    if (d.iommuGroup !== null) {
      groups.set(d.iommuGroup, [...(groups.get(d.iommuGroup) ?? []), d.address]);
    }
  }
  return {
    schemaVersion: 1,
    collectedAt: '2026-12-07T00:00:00Z',
    host: makeHost(),
    devices,
    groups: [...groups].map(([id, members]) => ({ id, devices: members })),
    problems: [],
  };
}

const onVfio = { driver: 'vfio-pci', driverModule: 'vfio_pci', driverOverride: 'vfio-pci' };
const port = rootPort('0000:00:01.0', { iommuGroup: 1 });

describe('a held device', () => {
  it('is in-use, naming its VM, and its free group member is not free', () => {
    const snapshot = assessSnapshot(
      facts(port, makeDevice(GPU, { ...onVfio, inUse: true, holder: QEMU }), audio(AUDIO, onVfio)),
    );
    const gpu = snapshot.devices.find((d) => d.address === GPU);
    const sound = snapshot.devices.find((d) => d.address === AUDIO);
    expect(gpu?.readiness.status).toBe('in-use');
    expect(gpu?.readiness.reasons[0]).toMatchObject({ code: 'in-use', severity: 'error' });
    expect(gpu?.readiness.reasons[0]?.message).toContain('VM "web-1" (pid 4242');
    expect(sound?.readiness.status).toBe('blocked');
    expect(sound?.readiness.reasons[0]?.message).toContain(`${GPU} is held by VM "web-1"`);
  });

  it('is bound again once the VM lets go', () => {
    const snapshot = assessSnapshot(facts(port, makeDevice(GPU, onVfio), audio(AUDIO, onVfio)));
    expect(snapshot.devices.map((d) => d.readiness.status)).toEqual(['blocked', 'bound', 'bound']);
    expect(snapshot.devices.flatMap((d) => d.readiness.reasons.map((r) => r.code))).not.toContain(
      'in-use',
    );
  });

  it('is named as an unknown process when /proc does not say who holds it', () => {
    expect(describeHolder(null)).toBe('an unknown process');
    expect(describeHolder({ pid: 7, command: 'fio', vm: null })).toBe('process pid 7, "fio"');
  });
});

describe('plans touching a held device', () => {
  it('refuse restore of its group, never forceable, naming the holder', () => {
    const snapshot = assessSnapshot(
      facts(port, makeDevice(GPU, { ...onVfio, inUse: true, holder: QEMU }), audio(AUDIO, onVfio)),
    );
    for (const address of [GPU, AUDIO]) {
      const result = planRebind(snapshot, address, 'host');
      expect(result.ok).toBe(false);
      if (result.ok) continue;
      expect(result.refusal.code).toBe('in-use');
      expect(result.refusal.message).toContain('nothing written');
      expect(result.refusal.message).toContain('VM "web-1"');
      expect(result.refusal.reasons.map((r) => r.code)).toEqual(['in-use']);
    }
  });

  it('refuse moving a held device to another vfio driver', () => {
    const variant = { module: 'nvgrace_gpu_vfio_pci', driver: 'nvgrace_gpu_vfio_pci' };
    const gpu = makeDevice(GPU, { ...onVfio, inUse: true, holder: QEMU });
    const snapshot = assessSnapshot(
      facts(port, {
        ...gpu,
        vfio: gpu.vfio === null ? null : { ...gpu.vfio, ...variant },
        vfioDriver: variant.module,
      }),
    );
    const result = planRebind(snapshot, GPU, 'vfio');
    expect(result.ok ? 'planned' : result.refusal.code).toBe('in-use');
  });

  it('refuse unbinding a PF whose held VF would vanish with it', () => {
    const pf = makeDevice('0000:41:00.0', {
      classCode: '020000',
      driver: 'ice',
      driverModule: 'ice',
      iommuGroup: 5,
      parent: null,
      sriov: { totalVfs: 8, numVfs: 1, driversAutoprobe: false, vfs: ['0000:41:01.0'] },
    });
    const vf = makeDevice('0000:41:01.0', {
      ...onVfio,
      classCode: '020000',
      iommuGroup: 6,
      parent: null,
      physfn: '0000:41:00.0',
      inUse: true,
      holder: QEMU,
    });
    const result = planRebind(assessSnapshot(facts(pf, vf)), pf.address, 'vfio');
    expect(result.ok ? 'planned' : result.refusal.code).toBe('in-use');
    if (!result.ok) expect(result.refusal.message).toContain('0000:41:01.0 is in use');
  });

  it('leave a held group that is already on vfio as done', () => {
    const snapshot = assessSnapshot(
      facts(port, makeDevice(GPU, { ...onVfio, inUse: true, holder: QEMU }), audio(AUDIO, onVfio)),
    );
    const result = planRebind(snapshot, GPU, 'vfio');
    expect(result.ok && result.plan.alreadyDone).toBe(true);
  });
});
