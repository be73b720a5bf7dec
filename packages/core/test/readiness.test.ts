import { describe, expect, it } from 'vitest';
import {
  type DeviceFacts,
  type Host,
  type HostFactsSnapshot,
  hostSnapshotSchema,
  INVENTORY_SCHEMA_VERSION,
} from '../src/inventory/schema';
import { assessDevice, assessSnapshot } from '../src/readiness/assess';
import { isDmaSafeDriver, isGroupViable, readinessRules } from '../src/readiness/rules';
import {
  AUDIO,
  audio,
  codes,
  ctxFor,
  GPU,
  makeDevice,
  makeHost,
  reasonFor,
  rootPort,
  vfioSelection,
} from './readiness-fixtures';

// ---------------------------------------------------------------------------------------------

describe('isDmaSafeDriver', () => {
  it.each([
    [null, 'endpoint', true],
    ['vfio-pci', 'endpoint', true],
    ['mlx5_vfio_pci', 'endpoint', true],
    ['nvgrace_gpu_vfio_pci', 'endpoint', true],
    ['pci-stub', 'endpoint', true],
    ['nvidia', 'endpoint', false],
    ['vfio_pci', 'endpoint', false],
    ['pcieport', 'endpoint', false],
    ['pcieport', 'bridge', true],
    ['shpchp', 'bridge', true],
    ['nvme', 'bridge', false],
  ] as const)('%s on a %s: %s', (driver, kind, safe) => {
    expect(isDmaSafeDriver(driver, kind)).toBe(safe);
  });
});

describe('isGroupViable', () => {
  it('holds when every member is driverless, on vfio, on pci-stub, or a bridge on its port driver', () => {
    expect(
      isGroupViable([
        rootPort('0000:00:01.0'),
        makeDevice(GPU, { driver: 'vfio-pci' }),
        audio(AUDIO, { driver: null }),
        audio('0000:01:00.2', { driver: 'pci-stub' }),
      ]),
    ).toBe(true);
    expect(isGroupViable([])).toBe(true);
  });

  it('fails when any endpoint is on a host driver', () => {
    expect(isGroupViable([makeDevice(GPU, { driver: 'vfio-pci' }), audio(AUDIO)])).toBe(false);
  });
});

describe('readinessRules', () => {
  it('have unique, stable codes', () => {
    const all = readinessRules.map((r) => r.code);
    expect(new Set(all).size).toBe(all.length);
    expect(all).toEqual(
      expect.arrayContaining([
        'iommu-off',
        'no-iommu-group',
        'host-critical',
        'not-endpoint',
        'group-shared',
        'group-not-viable',
        'no-reset-method',
        'sriov-vfs-enabled',
        'acs-override',
        'no-interrupt-remapping',
        'vfio-driver-ambiguous',
        'vfio-fallback',
        'driver-override-foreign',
      ]),
    );
  });

  it('report the severity they declare', () => {
    const off = makeHost({ iommu: { enabled: false, units: [], groupCount: 0 } });
    const device = makeDevice(GPU, { iommuGroup: null });
    for (const rule of readinessRules) {
      const found = rule.check(ctxFor(device, [], off));
      if (found !== null) expect(found.severity).toBe(rule.severity);
    }
  });
});

describe('a clean device', () => {
  it('is ready with no reasons at all', () => {
    const gpu = makeDevice(GPU);
    expect(assessDevice(ctxFor(gpu, [gpu]))).toEqual({ status: 'ready', reasons: [] });
  });
});

describe('iommu-off', () => {
  const offIommu: Partial<Host['iommu']> = {
    enabled: false,
    units: [],
    groupCount: 0,
    interruptRemapping: 'unknown',
  };
  const gpu = makeDevice(GPU, { iommuGroup: null });

  it('blocks, and tells an Intel host to enable VT-d and add intel_iommu=on', () => {
    const host = makeHost({
      iommu: offIommu,
      cmdline: { intelIommu: null, iommu: null, raw: 'root=/dev/sda1' },
    });
    const readiness = assessDevice(ctxFor(gpu, [], host));
    expect(readiness.status).toBe('blocked');
    const r = reasonFor(readiness, 'iommu-off');
    expect(r.severity).toBe('error');
    expect(r.message).toContain(GPU);
    expect(r.message).not.toContain('command line has');
    expect(r.remedy).toContain('VT-d');
    expect(r.remedy).toContain('`intel_iommu=on`');
    // Without groups, "no group" is not a second problem worth reporting.
    expect(codes(readiness)).not.toContain('no-iommu-group');
  });

  it('names intel_iommu=off and iommu=off when they are on the command line', () => {
    const host = makeHost({
      iommu: offIommu,
      cmdline: { intelIommu: 'off', iommu: 'off', raw: 'root=/dev/sda1 intel_iommu=off iommu=off' },
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [], host)), 'iommu-off');
    expect(r.message).toContain('`intel_iommu=off` and `iommu=off`, which turn it off');
    expect(r.remedy).toContain(
      'Remove `intel_iommu=off` and `iommu=off` from the kernel command line.',
    );
    expect(r.remedy).toContain('`intel_iommu=on`');
  });

  it('tells an AMD host the IOMMU is on by default and to enable it in firmware, removing amd_iommu=off', () => {
    const host = makeHost({
      cpuVendor: 'amd',
      iommu: offIommu,
      cmdline: { intelIommu: null, amdIommu: 'off', iommu: null, raw: 'amd_iommu=off' },
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [], host)), 'iommu-off');
    expect(r.message).toContain('`amd_iommu=off`, which turns it off');
    expect(r.remedy).toContain('Remove `amd_iommu=off`');
    expect(r.remedy).toContain('on by default');
    expect(r.remedy).toContain('AMD-Vi');
    expect(r.remedy).not.toContain('intel_iommu=on');
  });

  it('tells an Arm host to enable the SMMU', () => {
    const host = makeHost({
      cpuVendor: 'arm',
      iommu: offIommu,
      cmdline: { intelIommu: null, iommu: null, raw: '' },
    });
    expect(reasonFor(assessDevice(ctxFor(gpu, [], host)), 'iommu-off').remedy).toContain('SMMU');
  });

  it('tells a VM that its hypervisor must expose a virtual IOMMU', () => {
    const host = makeHost({
      virtualMachine: true,
      iommu: offIommu,
      cmdline: { intelIommu: null, iommu: null, raw: '' },
    });
    const remedy = reasonFor(assessDevice(ctxFor(gpu, [], host)), 'iommu-off').remedy;
    expect(remedy).toContain('virtual IOMMU');
    expect(remedy).toContain('-device intel-iommu');
    expect(remedy).toContain('`intel_iommu=on`');
    expect(remedy).not.toContain('VT-d in the firmware');
  });

  it('gives a generic remedy for an unknown CPU vendor', () => {
    const host = makeHost({ cpuVendor: 'unknown', iommu: offIommu });
    expect(reasonFor(assessDevice(ctxFor(gpu, [], host)), 'iommu-off').remedy).toContain(
      'VT-d, AMD-Vi or SMMU',
    );
  });

  it('does not fire when the IOMMU is on', () => {
    const device = makeDevice(GPU);
    expect(codes(assessDevice(ctxFor(device, [device])))).not.toContain('iommu-off');
  });
});

describe('no-iommu-group', () => {
  it('blocks a device the IOMMU does not cover, naming the units', () => {
    const gpu = makeDevice(GPU, { iommuGroup: null });
    const readiness = assessDevice(ctxFor(gpu, []));
    expect(readiness.status).toBe('blocked');
    const r = reasonFor(readiness, 'no-iommu-group');
    expect(r.message).toContain('(dmar0, dmar1)');
    expect(r.message).toContain(GPU);
    expect(r.remedy).toContain('dmesg');
  });
});

describe('not-endpoint', () => {
  it('blocks a bridge and points at the devices behind it', () => {
    const port = rootPort('0000:00:01.0', { iommuGroup: 1 });
    const gpu = makeDevice(GPU);
    const readiness = assessDevice(ctxFor(port, [port, gpu]));
    expect(readiness.status).toBe('blocked');
    const r = reasonFor(readiness, 'not-endpoint');
    expect(r.message).toContain('PCI bridge (class 060400)');
    expect(r.remedy).toBe(`Pass through the devices behind it instead: ${GPU}.`);
    expect(r.related).toEqual([GPU]);
    // Endpoint-only advice makes no sense for a bridge.
    expect(codes(readiness)).not.toContain('group-shared');
  });

  it('does not fire for an ISA bridge function, which is a type-0 endpoint', () => {
    const lpc = makeDevice('0000:00:1f.0', {
      classCode: '060100',
      driver: 'lpc_ich',
      iommuGroup: 9,
    });
    expect(codes(assessDevice(ctxFor(lpc, [lpc])))).not.toContain('not-endpoint');
  });
});

describe('host-critical', () => {
  it('blocks the root disk controller itself, saying why', () => {
    const nvme = makeDevice('0000:02:00.0', { classCode: '010802', driver: 'nvme', iommuGroup: 2 });
    const host = makeHost({
      critical: [{ address: '0000:02:00.0', kind: 'root-disk', detail: '/ on /dev/nvme0n1p2' }],
    });
    const readiness = assessDevice(ctxFor(nvme, [nvme], host));
    expect(readiness.status).toBe('blocked');
    const r = reasonFor(readiness, 'host-critical');
    expect(r.message).toBe(
      "0000:02:00.0 controls the host's root disk (/ on /dev/nvme0n1p2), so taking it would take the host down.",
    );
    expect(r.remedy).toContain('Leave 0000:02:00.0 to the host');
    expect(r.related).toEqual([]);
  });

  it('blocks every other member of a group holding the default-route NIC, and lists it', () => {
    const nic = makeDevice('0000:03:00.0', { classCode: '020000', driver: 'ixgbe', iommuGroup: 3 });
    const other = makeDevice('0000:03:00.1', {
      classCode: '020000',
      driver: 'ixgbe',
      iommuGroup: 3,
    });
    const host = makeHost({
      critical: [
        { address: '0000:03:00.0', kind: 'default-route', detail: 'default route via eno1' },
      ],
    });
    const r = reasonFor(assessDevice(ctxFor(other, [nic, other], host)), 'host-critical');
    expect(r.message).toContain(
      "0000:03:00.0, in the same IOMMU group 3 as 0000:03:00.1, carries the host's default route (default route via eno1)",
    );
    expect(r.message).toContain('the whole group moves to vfio together');
    expect(r.remedy).toContain('its own IOMMU group');
    expect(r.related).toEqual(['0000:03:00.0']);
  });

  it('names the boot VGA console even when the IOMMU is off (the device still moves alone)', () => {
    const gpu = makeDevice(GPU, { iommuGroup: null, bootVga: true });
    const host = makeHost({
      iommu: { enabled: false, units: [], groupCount: 0 },
      critical: [{ address: GPU, kind: 'boot-vga-console', detail: 'fbcon on efifb' }],
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [], host)), 'host-critical');
    expect(r.message).toContain('boot VGA device the host console draws on (fbcon on efifb)');
    expect(r.remedy).toContain('video=efifb:off');
  });

  it('blocks a PF whose VF (in its own group) carries the default route: the VF dies with the PF', () => {
    const vf = '0000:41:00.2';
    const pf = makeDevice('0000:41:00.0', {
      classCode: '020000',
      driver: 'mlx5_core',
      iommuGroup: 21,
      sriov: { totalVfs: 8, numVfs: 1, driversAutoprobe: true, vfs: [vf] },
    });
    const host = makeHost({
      critical: [{ address: vf, kind: 'default-route', detail: 'default route via enp65s0f0v0' }],
    });
    const readiness = assessDevice(ctxFor(pf, [pf], host));
    expect(readiness.status).toBe('blocked');
    const r = reasonFor(readiness, 'host-critical');
    expect(r.message).toContain(`${vf}, a VF of 0000:41:00.0 that disappears`);
    expect(r.related).toEqual([vf]);
    // Once the PF is already on vfio its VFs are gone: nothing more to lose.
    const bound = { ...pf, driver: 'vfio-pci' };
    expect(codes(assessDevice(ctxFor(bound, [bound], host)))).not.toContain('host-critical');
  });

  it('does not fire for a critical device in another group', () => {
    const gpu = makeDevice(GPU);
    const host = makeHost({
      critical: [{ address: '0000:02:00.0', kind: 'root-disk', detail: '/ on /dev/nvme0n1p2' }],
    });
    expect(codes(assessDevice(ctxFor(gpu, [gpu], host)))).not.toContain('host-critical');
  });
});

describe('group-shared', () => {
  it('lists the other endpoints of the group as info, leaving bridges out', () => {
    const port = rootPort('0000:00:01.0');
    const gpu = makeDevice(GPU);
    const snd = audio(AUDIO);
    const readiness = assessDevice(ctxFor(gpu, [port, gpu, snd]));
    expect(readiness.status).toBe('ready');
    const r = reasonFor(readiness, 'group-shared');
    expect(r.severity).toBe('info');
    expect(r.message).toBe(
      'IOMMU group 1 also holds 0000:01:00.1 (GA102 High Definition Audio Controller): all of its endpoints move to vfio together and can only go to the same VM.',
    );
    expect(r.related).toEqual([AUDIO]);
  });

  it('does not fire for a device alone in its group (bridges aside)', () => {
    const gpu = makeDevice(GPU);
    expect(codes(assessDevice(ctxFor(gpu, [rootPort('0000:00:01.0'), gpu])))).toEqual([]);
  });
});

describe('bound and group-not-viable', () => {
  it('is bound when the device and every endpoint of its group are on vfio (or driverless)', () => {
    const gpu = makeDevice(GPU, { driver: 'vfio-pci', driverModule: 'vfio_pci' });
    const snd = audio(AUDIO, { driver: null, driverModule: null });
    const readiness = assessDevice(ctxFor(gpu, [rootPort('0000:00:01.0'), gpu, snd]));
    expect(readiness.status).toBe('bound');
    expect(codes(readiness)).toEqual(['group-shared']);
  });

  it('is bound on a variant driver', () => {
    const vf = makeDevice('0000:3b:00.2', {
      vendorId: '15b3',
      deviceId: '101e',
      classCode: '020000',
      driver: 'mlx5_vfio_pci',
      iommuGroup: 40,
    });
    expect(assessDevice(ctxFor(vf, [vf])).status).toBe('bound');
  });

  it('stays bound with warnings', () => {
    const gpu = makeDevice(GPU, { driver: 'vfio-pci', resettable: false, resetMethods: [] });
    const readiness = assessDevice(ctxFor(gpu, [gpu]));
    expect(readiness.status).toBe('bound');
    expect(codes(readiness)).toEqual(['no-reset-method']);
  });

  it('is ready with a warning naming the host-driver members when the group is not viable', () => {
    const gpu = makeDevice(GPU, { driver: 'vfio-pci' });
    const snd = audio(AUDIO);
    const readiness = assessDevice(ctxFor(gpu, [gpu, snd]));
    expect(readiness.status).toBe('ready');
    const r = reasonFor(readiness, 'group-not-viable');
    expect(r.severity).toBe('warning');
    expect(r.message).toBe(
      '0000:01:00.0 is on vfio-pci, but IOMMU group 1 also holds 0000:01:00.1 (GA102 High Definition Audio Controller) on snd_hda_intel: while a device of the group is on a host driver, /dev/vfio/1 cannot be used.',
    );
    expect(r.remedy).toBe(
      'Bind 0000:01:00.1 to vfio-pci as well (or unbind it), so the whole group is on vfio.',
    );
    expect(r.related).toEqual([AUDIO]);
  });

  it('does not warn about viability for a device still on its host driver', () => {
    const gpu = makeDevice(GPU);
    expect(codes(assessDevice(ctxFor(gpu, [gpu, audio(AUDIO)])))).not.toContain('group-not-viable');
  });

  it('is blocked, not bound, when an error applies to a device already on vfio', () => {
    const gpu = makeDevice(GPU, { driver: 'vfio-pci' });
    const host = makeHost({
      critical: [{ address: GPU, kind: 'boot-vga-console', detail: 'fbcon on efifb' }],
    });
    expect(assessDevice(ctxFor(gpu, [gpu], host)).status).toBe('blocked');
  });
});

describe('no-reset-method', () => {
  it('warns when the device has no reset at all', () => {
    const gpu = makeDevice(GPU, { resettable: false, resetMethods: [] });
    const readiness = assessDevice(ctxFor(gpu, [gpu]));
    expect(readiness.status).toBe('ready');
    expect(reasonFor(readiness, 'no-reset-method').message).toContain('no FLR, PM or bus reset');
  });

  it.each([
    { resettable: true, resetMethods: [] },
    { resettable: false, resetMethods: ['pm'] },
  ])('does not fire for %j', (reset) => {
    const gpu = makeDevice(GPU, reset);
    expect(codes(assessDevice(ctxFor(gpu, [gpu])))).not.toContain('no-reset-method');
  });
});

describe('sriov-vfs-enabled', () => {
  const pf = (numVfs: number, driver: string) =>
    makeDevice('0000:3b:00.0', {
      vendorId: '15b3',
      deviceId: '101d',
      classCode: '020000',
      driver,
      iommuGroup: 30,
      sriov: {
        totalVfs: 8,
        numVfs,
        driversAutoprobe: true,
        vfs: ['0000:3b:00.3', '0000:3b:00.2'].slice(0, numVfs),
      },
    });

  it('warns that unbinding the PF driver destroys its VFs, and lists them', () => {
    const device = pf(2, 'mlx5_core');
    const r = reasonFor(assessDevice(ctxFor(device, [device])), 'sriov-vfs-enabled');
    expect(r.message).toBe(
      '0000:3b:00.0 is an SR-IOV physical function with 2 virtual functions enabled (0000:3b:00.2, 0000:3b:00.3): unbinding its driver mlx5_core destroys them and cuts off whatever uses them.',
    );
    expect(r.remedy).toContain('/sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs');
    expect(r.related).toEqual(['0000:3b:00.2', '0000:3b:00.3']);
  });

  it('does not fire with no VFs enabled, or for a PF already on vfio', () => {
    for (const device of [pf(0, 'mlx5_core'), pf(2, 'vfio-pci')]) {
      expect(codes(assessDevice(ctxFor(device, [device])))).not.toContain('sriov-vfs-enabled');
    }
  });
});

describe('acs-override', () => {
  it('warns that groups may not be real isolation', () => {
    const gpu = makeDevice(GPU);
    const host = makeHost({ cmdline: { pcieAcsOverride: 'downstream,multifunction' } });
    const r = reasonFor(assessDevice(ctxFor(gpu, [gpu], host)), 'acs-override');
    expect(r.message).toContain('`pcie_acs_override=downstream,multifunction`');
    expect(r.message).toContain('peer-to-peer DMA');
  });

  it('does not fire without the flag', () => {
    const gpu = makeDevice(GPU);
    expect(codes(assessDevice(ctxFor(gpu, [gpu])))).not.toContain('acs-override');
  });
});

describe('no-interrupt-remapping', () => {
  it('warns when remapping is disabled, naming the flag that disabled it', () => {
    const gpu = makeDevice(GPU);
    const host = makeHost({
      iommu: { interruptRemapping: 'disabled' },
      cmdline: { raw: 'intel_iommu=on intremap=off' },
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [gpu], host)), 'no-interrupt-remapping');
    expect(r.severity).toBe('warning');
    expect(r.message).toContain('allow_unsafe_interrupts=1');
    expect(r.message).toContain('`intremap=off`');
    expect(r.remedy).toContain('remove `intremap=off`');
  });

  it.each(['enabled', 'unknown'] as const)('does not fire when it is %s', (state) => {
    const gpu = makeDevice(GPU);
    const host = makeHost({ iommu: { interruptRemapping: state } });
    expect(codes(assessDevice(ctxFor(gpu, [gpu], host)))).not.toContain('no-interrupt-remapping');
  });
});

describe('vfio-driver-ambiguous and vfio-fallback', () => {
  it('warns when two variant drivers tie, naming both', () => {
    const vf = makeDevice('0000:3b:00.2', {
      vfio: vfioSelection({
        module: 'mlx5_vfio_pci',
        driver: 'mlx5_vfio_pci',
        ambiguous: true,
        candidates: [
          {
            pattern: 'vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*',
            module: 'mlx5_vfio_pci',
            wildcards: 5,
            line: 10,
          },
          {
            pattern: 'vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*',
            module: 'other_vfio_pci',
            wildcards: 5,
            line: 20,
          },
          { pattern: 'vfio_pci:v*d*sv*sd*bc*sc*i*', module: 'vfio_pci', wildcards: 7, line: 30 },
        ],
      }),
    });
    const r = reasonFor(assessDevice(ctxFor(vf, [vf])), 'vfio-driver-ambiguous');
    expect(r.message).toBe(
      '2 vfio drivers match 0000:3b:00.2 equally well, mlx5_vfio_pci (line 10) and other_vfio_pci (line 20), with 5 wildcards each; mlx5_vfio_pci was chosen because it comes first in modules.alias, as libvirt would choose.',
    );
  });

  it('explains the fallback on a host without modules.alias', () => {
    const gpu = makeDevice(GPU, { vfio: vfioSelection({ source: 'fallback', candidates: [] }) });
    const host = makeHost({
      modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [gpu], host)), 'vfio-fallback');
    expect(r.severity).toBe('info');
    expect(r.message).toContain('No modules.alias was found');
    expect(r.remedy).toContain('depmod');
  });

  it('explains the fallback on a pre-5.16 kernel', () => {
    const gpu = makeDevice(GPU, { vfio: vfioSelection({ source: 'fallback', candidates: [] }) });
    const host = makeHost({
      modulesAlias: {
        path: 'lib/modules/5.10.0-30-amd64/modules.alias',
        pciAliases: 8000,
        vfioAliases: 0,
        malformedLines: 0,
      },
    });
    const r = reasonFor(assessDevice(ctxFor(gpu, [gpu], host)), 'vfio-fallback');
    expect(r.message).toBe(
      '0000:01:00.0 gets the generic vfio-pci: lib/modules/5.10.0-30-amd64/modules.alias has no vfio_pci aliases at all: kernels before 5.16 have no vfio variant drivers.',
    );
    expect(r.remedy).toBeNull();
  });

  it('neither fires for a plain alias match', () => {
    const gpu = makeDevice(GPU);
    const found = codes(assessDevice(ctxFor(gpu, [gpu])));
    expect(found).not.toContain('vfio-driver-ambiguous');
    expect(found).not.toContain('vfio-fallback');
  });
});

describe('driver-override-foreign', () => {
  it('notes a driver_override naming a host driver', () => {
    const gpu = makeDevice(GPU, { driverOverride: 'nouveau' });
    const r = reasonFor(assessDevice(ctxFor(gpu, [gpu])), 'driver-override-foreign');
    expect(r.message).toBe(
      'driver_override of 0000:01:00.0 already names nouveau; moving the device to vfio replaces it with vfio-pci.',
    );
    expect(r.remedy).toContain('driverctl');
  });

  it.each([null, 'vfio-pci', 'mlx5_vfio_pci'])('does not fire for %s', (override) => {
    const gpu = makeDevice(GPU, { driverOverride: override });
    expect(codes(assessDevice(ctxFor(gpu, [gpu])))).not.toContain('driver-override-foreign');
  });
});

describe('reason order', () => {
  it('puts errors first, then warnings, then info, and only errors block', () => {
    const gpu = makeDevice(GPU, {
      resettable: false,
      resetMethods: [],
      driverOverride: 'nouveau',
      vfio: vfioSelection({ source: 'fallback', candidates: [] }),
    });
    const host = makeHost({
      cmdline: { pcieAcsOverride: 'downstream' },
      critical: [{ address: GPU, kind: 'boot-vga-console', detail: 'fbcon on efifb' }],
    });
    const readiness = assessDevice(ctxFor(gpu, [gpu, audio(AUDIO)], host));
    expect(codes(readiness)).toEqual([
      'host-critical',
      'acs-override',
      'no-reset-method',
      'group-shared',
      'vfio-fallback',
      'driver-override-foreign',
    ]);
    expect(readiness.status).toBe('blocked');

    const warningsOnly = assessDevice(
      ctxFor(gpu, [gpu], makeHost({ cmdline: { pcieAcsOverride: 'downstream' } })),
    );
    expect(warningsOnly.status).toBe('ready');
    expect(warningsOnly.reasons.map((r) => r.severity)).toEqual([
      'warning',
      'warning',
      'info',
      'info',
    ]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('assessSnapshot', () => {
  /**
   * A workstation: GPU 1 is the boot console; GPU 2 and its HDMI audio share group 2 (GPU 2
   * already on vfio-pci, the audio still on snd_hda_intel); the root NVMe shares group 3 with a
   * SATA controller; root ports sit in groups of their own.
   */
  function workstation(host: Host): HostFactsSnapshot {
    const devices: DeviceFacts[] = [
      rootPort('0000:00:01.0', { iommuGroup: 0 }),
      makeDevice('0000:01:00.0', { iommuGroup: 1, bootVga: true, parent: '0000:00:01.0' }),
      rootPort('0000:00:01.1', { iommuGroup: 4 }),
      makeDevice('0000:02:00.0', { iommuGroup: 2, driver: 'vfio-pci', parent: '0000:00:01.1' }),
      audio('0000:02:00.1', { iommuGroup: 2, parent: '0000:00:01.1' }),
      makeDevice('0000:00:17.0', {
        classCode: '010601',
        driver: 'ahci',
        iommuGroup: 3,
        parent: null,
      }),
      makeDevice('0000:00:1d.0', {
        classCode: '010802',
        driver: 'nvme',
        iommuGroup: 3,
        parent: null,
      }),
    ];
    const iommuOn = host.iommu.enabled;
    return {
      schemaVersion: INVENTORY_SCHEMA_VERSION,
      collectedAt: '2026-01-01T00:00:00.000Z',
      host,
      devices: iommuOn ? devices : devices.map((d) => ({ ...d, iommuGroup: null })),
      groups: iommuOn
        ? [
            { id: 0, devices: ['0000:00:01.0'] },
            { id: 1, devices: ['0000:01:00.0'] },
            { id: 2, devices: ['0000:02:00.0', '0000:02:00.1'] },
            { id: 3, devices: ['0000:00:17.0', '0000:00:1d.0'] },
            { id: 4, devices: ['0000:00:01.1'] },
          ]
        : [],
      problems: [],
    };
  }

  const critical = [
    { address: '0000:00:1d.0', kind: 'root-disk', detail: '/ on /dev/nvme0n1p2' },
    { address: '0000:01:00.0', kind: 'boot-vga-console', detail: 'fbcon on efifb' },
  ] as const;

  function byAddress(snapshot: ReturnType<typeof assessSnapshot>) {
    return new Map(snapshot.devices.map((d) => [d.address, d.readiness]));
  }

  it('assesses every device with its whole group, and the result passes the schema', () => {
    const snapshot = assessSnapshot(workstation(makeHost({ critical: [...critical] })));
    expect(hostSnapshotSchema.parse(snapshot)).toEqual(snapshot);
    const r = byAddress(snapshot);
    const status = (a: string) => r.get(a)?.status;

    expect(status('0000:00:01.0')).toBe('blocked');
    expect(r.get('0000:00:01.0')?.reasons[0]?.code).toBe('not-endpoint');

    expect(status('0000:01:00.0')).toBe('blocked');
    expect(r.get('0000:01:00.0')?.reasons.map((x) => x.code)).toEqual(['host-critical']);

    // GPU 2 is on vfio but its audio function is not: ready, with the viability warning.
    expect(status('0000:02:00.0')).toBe('ready');
    expect(r.get('0000:02:00.0')?.reasons.map((x) => x.code)).toEqual([
      'group-not-viable',
      'group-shared',
    ]);
    expect(status('0000:02:00.1')).toBe('ready');
    expect(r.get('0000:02:00.1')?.reasons.map((x) => x.code)).toEqual(['group-shared']);

    // The SATA controller is blocked by the NVMe root disk it shares group 3 with.
    expect(status('0000:00:1d.0')).toBe('blocked');
    expect(status('0000:00:17.0')).toBe('blocked');
    const sata = r.get('0000:00:17.0')?.reasons[0];
    expect(sata?.code).toBe('host-critical');
    expect(sata?.related).toEqual(['0000:00:1d.0']);
    expect(sata?.message).toContain('/ on /dev/nvme0n1p2');
  });

  it('turns GPU 2 bound once its audio function is on vfio too', () => {
    const facts = workstation(makeHost());
    facts.devices = facts.devices.map((d) =>
      d.address === '0000:02:00.1' ? { ...d, driver: 'vfio-pci', driverModule: 'vfio_pci' } : d,
    );
    const r = byAddress(assessSnapshot(facts));
    expect(r.get('0000:02:00.0')?.status).toBe('bound');
    expect(r.get('0000:02:00.1')?.status).toBe('bound');
  });

  it('finds group members listed only in groups[] or only on the device', () => {
    const facts = workstation(makeHost());
    facts.groups = facts.groups.filter((g) => g.id !== 2);
    expect(
      byAddress(assessSnapshot(facts))
        .get('0000:02:00.0')
        ?.reasons.map((x) => x.code),
    ).toEqual(['group-not-viable', 'group-shared']);
  });

  it.each([
    ['intel', false, '`intel_iommu=on`'],
    ['amd', false, 'on by default'],
    ['intel', true, 'virtual IOMMU'],
  ] as const)(
    'blocks everything when the IOMMU is off (%s, VM: %s)',
    (cpuVendor, virtualMachine, hint) => {
      const host = makeHost({
        cpuVendor,
        virtualMachine,
        iommu: { enabled: false, units: [], groupCount: 0, interruptRemapping: 'unknown' },
        cmdline: { intelIommu: null, iommu: null, raw: 'root=/dev/nvme0n1p2' },
      });
      const snapshot = assessSnapshot(workstation(host));
      expect(hostSnapshotSchema.parse(snapshot)).toEqual(snapshot);
      for (const device of snapshot.devices) {
        expect(device.readiness.status).toBe('blocked');
        const off = device.readiness.reasons.find((x) => x.code === 'iommu-off');
        expect(off?.remedy).toContain(hint);
        expect(device.readiness.reasons.map((x) => x.code)).not.toContain('no-iommu-group');
      }
    },
  );

  it('passes everything else through unchanged', () => {
    const facts = workstation(makeHost());
    facts.problems = [{ source: '/proc/interrupts', message: 'unreadable' }];
    const snapshot = assessSnapshot(facts);
    expect(snapshot.problems).toEqual(facts.problems);
    expect(snapshot.groups).toBe(facts.groups);
    expect(snapshot.devices.map(({ readiness: _, ...d }) => d)).toEqual(facts.devices);
  });
});
