import { describe, expect, it } from 'vitest';
import {
  type Device,
  type HostSnapshot,
  hostSnapshotSchema,
  type ReadinessReason,
  type VfioSelection,
} from '../src/inventory/schema';
import { type PlanResult, planRebind, warningsNeedingForce } from '../src/plan/plan-rebind';
import {
  type PlanStep,
  planRefusalSchema,
  planStepSchema,
  type RebindPlan,
  type RebindTarget,
  rebindPlanSchema,
} from '../src/plan/schema';

// ---------------------------------------------------------------------------------------------
// Builders: complete snapshots that pass hostSnapshotSchema, with readiness set by hand (the
// readiness rules are tested elsewhere; here they are inputs).

function selection(module: string, driver: string): VfioSelection {
  return {
    module,
    driver,
    driverSource: 'convention',
    source: module === 'vfio_pci' ? 'fallback' : 'alias',
    ambiguous: false,
    candidates: [],
    explanation: `test selection of ${module}`,
  };
}
const VFIO_PCI = selection('vfio_pci', 'vfio-pci');
const MLX5_VFIO = selection('mlx5_vfio_pci', 'mlx5_vfio_pci');

function reason(
  code: string,
  severity: ReadinessReason['severity'],
  message: string,
): ReadinessReason {
  return { code, severity, message, remedy: null, related: [] };
}

function device(address: string, fields: Partial<Device> = {}): Device {
  const vfio = fields.vfio === undefined ? VFIO_PCI : fields.vfio;
  return {
    address,
    vendorId: '8086',
    deviceId: '1572',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: '020000',
    revision: null,
    modalias: null,
    driver: null,
    driverModule: null,
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
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: [],
    names: {
      vendor: 'Intel',
      device: 'Ethernet Controller X710',
      subsystem: null,
      className: 'Ethernet controller',
    },
    readiness: { status: 'ready', reasons: [] },
    ...fields,
    vfio,
    vfioDriver: vfio?.module ?? null,
  };
}

function bridge(address: string, iommuGroup: number): Device {
  return device(address, {
    kind: 'bridge',
    classCode: '060400',
    driver: 'pcieport',
    iommuGroup,
    names: { vendor: 'AMD', device: 'GPP Bridge', subsystem: null, className: 'PCI bridge' },
  });
}

function snapshot(...devices: Device[]): HostSnapshot {
  const groups = new Map<number, string[]>();
  for (const d of devices) {
    if (d.iommuGroup === null) continue;
    groups.set(d.iommuGroup, [...(groups.get(d.iommuGroup) ?? []), d.address]);
  }
  return hostSnapshotSchema.parse({
    schemaVersion: 1,
    collectedAt: '2025-01-01T00:00:00Z',
    host: {
      hostname: 'node7',
      machineId: null,
      kernelRelease: '6.12.0',
      cpuVendor: 'amd',
      virtualMachine: false,
      cmdline: {
        intelIommu: null,
        amdIommu: null,
        iommu: 'pt',
        iommuPassthrough: null,
        pcieAcsOverride: null,
        vfioPciIds: [],
        raw: 'iommu=pt',
      },
      iommu: {
        enabled: true,
        units: ['ivhd0'],
        groupCount: groups.size,
        interruptRemapping: 'enabled',
      },
      vfio: { modulesLoaded: [], devNodes: ['vfio'] },
      modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
      pciIdsPath: null,
      critical: [],
    },
    devices,
    groups: [...groups].map(([id, members]) => ({ id, devices: members })),
    problems: [],
  });
}

// ---------------------------------------------------------------------------------------------
// Helpers: every plan produced here goes through the wire schema and the new_id check.

const allPlans: RebindPlan[] = [];

function plan(snap: HostSnapshot, address: string, target: RebindTarget): RebindPlan {
  const result = planRebind(snap, address, target);
  if (!result.ok) throw new Error(`expected a plan, got ${JSON.stringify(result.refusal)}`);
  expect(rebindPlanSchema.parse(result.plan)).toEqual(result.plan);
  allPlans.push(result.plan);
  return result.plan;
}

function refusal(result: PlanResult) {
  if (result.ok) throw new Error(`expected a refusal, got ${JSON.stringify(result.plan)}`);
  expect(planRefusalSchema.parse(result.refusal)).toEqual(result.refusal);
  return result.refusal;
}

function summary(steps: PlanStep[]): string[] {
  return steps.map((step) => {
    switch (step.action) {
      case 'modprobe':
        return `modprobe ${step.module}`;
      case 'verify-driver':
        return `verify ${step.address} ${step.expect.kind === 'driver' ? step.expect.driver : step.expect.kind}`;
      default:
        return `${step.action} ${JSON.stringify(step.value)} > ${step.path}`;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// A model of the kernel's driver_override / bind / unbind / drivers_probe semantics, enough to
// prove that a plan reaches its target and that rollback after any prefix restores the host.

interface SimDevice {
  driver: string | null;
  override: string | null;
  /** The driver drivers_probe binds when there is no override (its id table matches). */
  hostDriver: string | null;
}

const MODULE_DRIVERS: Record<string, string> = {
  vfio_pci: 'vfio-pci',
  mlx5_vfio_pci: 'mlx5_vfio_pci',
};

class KernelSim {
  readonly devices = new Map<string, SimDevice>();
  readonly registered: Set<string>;

  constructor(
    snap: HostSnapshot,
    hostDrivers: Record<string, string | null>,
    loaded: string[] = [],
  ) {
    this.registered = new Set(loaded);
    for (const d of snap.devices) {
      const hostDriver =
        hostDrivers[d.address] ??
        (d.driver !== null && !d.driver.includes('vfio') ? d.driver : null);
      this.devices.set(d.address, { driver: d.driver, override: d.driverOverride, hostDriver });
      if (d.driver !== null) this.registered.add(d.driver);
      if (hostDriver !== null) this.registered.add(hostDriver);
    }
  }

  state(): Record<string, { driver: string | null; override: string | null }> {
    return Object.fromEntries(
      [...this.devices].map(([a, d]) => [a, { driver: d.driver, override: d.override }]),
    );
  }

  private dev(address: string): SimDevice {
    const d = this.devices.get(address);
    if (d === undefined) throw new Error(`ENODEV ${address}`);
    return d;
  }

  /** pci_match_device: an override restricts matching to the driver it names. */
  private matches(d: SimDevice, driver: string): boolean {
    if (!this.registered.has(driver)) return false;
    return d.override !== null ? d.override === driver : d.hostDriver === driver;
  }

  private write(path: string, value: string): void {
    expect(path).not.toMatch(/new_id|remove_id/);
    let m = /^\/sys\/bus\/pci\/devices\/([^/]+)\/driver_override$/.exec(path);
    if (m?.[1] !== undefined) {
      // The kernel keeps what precedes the newline; empty means no override.
      const text = value.split('\n')[0] ?? '';
      this.dev(m[1]).override = text === '' ? null : text;
      return;
    }
    m = /^\/sys\/bus\/pci\/drivers\/([^/]+)\/(bind|unbind)$/.exec(path);
    if (m?.[1] !== undefined) {
      const d = this.dev(value);
      if (m[2] === 'unbind') {
        if (d.driver !== m[1]) throw new Error(`ENODEV: ${value} is not bound to ${m[1]}`);
        d.driver = null;
      } else {
        if (d.driver !== null || !this.matches(d, m[1]))
          throw new Error(`ENODEV: ${m[1]} cannot bind ${value}`);
        d.driver = m[1];
      }
      return;
    }
    m = /^\/sys\/bus\/pci\/devices\/([^/]+)\/driver\/unbind$/.exec(path);
    if (m?.[1] !== undefined) {
      const d = this.dev(m[1]);
      if (d.driver === null) throw new Error(`ENOENT ${path}`);
      d.driver = null;
      return;
    }
    if (path === '/sys/bus/pci/drivers_probe') {
      const d = this.dev(value);
      if (d.driver !== null) return;
      const candidate = d.override ?? d.hostDriver;
      if (candidate !== null && this.matches(d, candidate)) d.driver = candidate;
      return;
    }
    throw new Error(`unexpected path ${path}`);
  }

  apply(step: PlanStep): void {
    switch (step.action) {
      case 'modprobe': {
        const driver = MODULE_DRIVERS[step.module];
        if (driver === undefined) throw new Error(`modprobe: no module ${step.module}`);
        this.registered.add(driver);
        return;
      }
      case 'verify-driver': {
        const { driver } = this.dev(step.address);
        const ok =
          step.expect.kind === 'driver'
            ? driver === step.expect.driver
            : step.expect.kind === 'none'
              ? driver === null
              : driver === null || !driver.includes('vfio');
        if (!ok)
          throw new Error(
            `verify ${step.address}: on ${driver}, expected ${JSON.stringify(step.expect)}`,
          );
        return;
      }
      case 'unbind-current':
        // The executor skips it when the device has no driver (the link does not exist).
        if (this.dev(step.address).driver === null) return;
        this.write(step.path, step.value);
        return;
      default:
        this.write(step.path, step.value);
    }
  }
}

/** Applies every prefix of the plan, then the rollback, and expects the original state back. */
function expectRollbackRestores(
  snap: HostSnapshot,
  p: RebindPlan,
  hostDrivers: Record<string, string | null> = {},
  loaded: string[] = [],
): void {
  const original = new KernelSim(snap, hostDrivers, loaded).state();
  for (let k = 0; k <= p.steps.length; k++) {
    const sim = new KernelSim(snap, hostDrivers, loaded);
    for (const step of p.steps.slice(0, k)) sim.apply(step);
    for (const step of p.rollback) sim.apply(step);
    expect(sim.state(), `rollback after ${k} steps`).toEqual(original);
  }
}

function applyAll(sim: KernelSim, steps: PlanStep[]): KernelSim {
  for (const step of steps) sim.apply(step);
  return sim;
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

const NIC = device('0000:3b:00.0', {
  driver: 'i40e',
  driverModule: 'i40e',
  iommuGroup: 12,
  netInterfaces: ['eth2'],
});

const GPU_GROUP = [
  bridge('0000:00:03.1', 1),
  device('0000:01:00.1', {
    classCode: '040300',
    driver: 'snd_hda_intel',
    vendorId: '10de',
    deviceId: '10f0',
    names: {
      vendor: 'NVIDIA',
      device: 'GP104 HD Audio',
      subsystem: null,
      className: 'Audio device',
    },
    readiness: {
      status: 'ready',
      reasons: [reason('no-flr', 'warning', 'no function-level reset')],
    },
  }),
  device('0000:01:00.0', {
    classCode: '030000',
    driver: 'nvidia',
    vendorId: '10de',
    deviceId: '1b80',
    names: {
      vendor: 'NVIDIA',
      device: 'GP104 [GeForce GTX 1080]',
      subsystem: null,
      className: 'VGA compatible controller',
    },
    readiness: {
      status: 'ready',
      reasons: [
        reason('no-flr', 'warning', 'no function-level reset'),
        reason('gpu-rom', 'info', 'ROM present'),
      ],
    },
  }),
];

const MLX_PF = device('0000:3b:00.0', {
  vendorId: '15b3',
  deviceId: '101d',
  driver: 'mlx5_core',
  iommuGroup: 20,
  netInterfaces: ['ens1f0np0'],
  sriov: { totalVfs: 8, numVfs: 2, driversAutoprobe: true, vfs: ['0000:3b:00.2', '0000:3b:00.3'] },
  vfio: MLX5_VFIO,
  names: {
    vendor: 'Mellanox',
    device: 'MT2892 [ConnectX-6 Dx]',
    subsystem: null,
    className: 'Ethernet controller',
  },
});
const mlxVf = (address: string, ifname: string, group: number): Device =>
  device(address, {
    vendorId: '15b3',
    deviceId: '101e',
    driver: 'mlx5_core',
    iommuGroup: group,
    physfn: '0000:3b:00.0',
    netInterfaces: [ifname],
    vfio: MLX5_VFIO,
    names: {
      vendor: 'Mellanox',
      device: 'ConnectX Family mlx5Gen Virtual Function',
      subsystem: null,
      className: 'Ethernet controller',
    },
  });
const MLX_VF0 = mlxVf('0000:3b:00.2', 'ens1f0v0', 21);
const MLX_VF1 = mlxVf('0000:3b:00.3', 'ens1f0v1', 22);

describe('planRebind to vfio', () => {
  it('moves a single NIC with the exact sysfs writes, accepting the lspci address form', () => {
    const snap = snapshot(NIC);
    const p = plan(snap, '3B:00.0', 'vfio');
    expect(p).toMatchObject({
      target: 'vfio',
      address: '0000:3b:00.0',
      iommuGroup: 12,
      devices: ['0000:3b:00.0'],
      preconditions: [{ address: '0000:3b:00.0', driver: 'i40e', driverOverride: null }],
      alreadyDone: false,
      warnings: [],
    });
    expect(p.steps).toEqual([
      { action: 'modprobe', module: 'vfio_pci', description: expect.any(String) },
      {
        action: 'set-override',
        address: '0000:3b:00.0',
        path: '/sys/bus/pci/devices/0000:3b:00.0/driver_override',
        value: 'vfio-pci',
        description: expect.any(String),
      },
      {
        action: 'unbind',
        address: '0000:3b:00.0',
        driver: 'i40e',
        path: '/sys/bus/pci/drivers/i40e/unbind',
        value: '0000:3b:00.0',
        description: expect.any(String),
      },
      {
        action: 'probe',
        address: '0000:3b:00.0',
        path: '/sys/bus/pci/drivers_probe',
        value: '0000:3b:00.0',
        description: expect.any(String),
      },
      {
        action: 'verify-driver',
        address: '0000:3b:00.0',
        expect: { kind: 'driver', driver: 'vfio-pci' },
        description: expect.any(String),
      },
    ]);
    expect(summary(p.rollback)).toEqual([
      'restore-override "\\n" > /sys/bus/pci/devices/0000:3b:00.0/driver_override',
      'unbind-current "0000:3b:00.0" > /sys/bus/pci/devices/0000:3b:00.0/driver/unbind',
      'bind "0000:3b:00.0" > /sys/bus/pci/drivers/i40e/bind',
      'verify 0000:3b:00.0 i40e',
    ]);
    expect(p.blastRadius).toEqual([
      {
        address: '0000:3b:00.0',
        driver: 'i40e',
        name: 'Intel Ethernet Controller X710',
        netInterfaces: ['eth2'],
        reason: 'loses driver i40e; eth2 disappears',
      },
    ]);
    for (const step of p.steps) expect(step.description).toMatch(/^[A-Z].*\.$/);
    expect(applyAll(new KernelSim(snap, {}), p.steps).state()['0000:3b:00.0']).toEqual({
      driver: 'vfio-pci',
      override: 'vfio-pci',
    });
  });

  it('moves a GPU with its audio function in address order, one modprobe, the bridge untouched', () => {
    const snap = snapshot(...GPU_GROUP);
    const p = plan(snap, '0000:01:00.1', 'vfio');
    expect(p.address).toBe('0000:01:00.1');
    expect(p.devices).toEqual(['0000:01:00.0', '0000:01:00.1']);
    expect(p.preconditions.map((c) => c.address)).toEqual(['0000:01:00.0', '0000:01:00.1']);
    expect(summary(p.steps)).toEqual([
      'modprobe vfio_pci',
      'set-override "vfio-pci" > /sys/bus/pci/devices/0000:01:00.0/driver_override',
      'unbind "0000:01:00.0" > /sys/bus/pci/drivers/nvidia/unbind',
      'probe "0000:01:00.0" > /sys/bus/pci/drivers_probe',
      'verify 0000:01:00.0 vfio-pci',
      'set-override "vfio-pci" > /sys/bus/pci/devices/0000:01:00.1/driver_override',
      'unbind "0000:01:00.1" > /sys/bus/pci/drivers/snd_hda_intel/unbind',
      'probe "0000:01:00.1" > /sys/bus/pci/drivers_probe',
      'verify 0000:01:00.1 vfio-pci',
    ]);
    expect(JSON.stringify(p)).not.toContain('0000:00:03.1');
    // Rollback runs in reverse device order.
    expect(p.rollback.map((s) => ('address' in s ? s.address : ''))).toEqual([
      ...Array(4).fill('0000:01:00.1'),
      ...Array(4).fill('0000:01:00.0'),
    ]);
    expect(p.blastRadius.map((e) => [e.address, e.reason])).toEqual([
      ['0000:01:00.0', 'loses driver nvidia'],
      ['0000:01:00.1', 'loses driver snd_hda_intel'],
    ]);
    // The same warning on both functions is listed once; info reasons come along.
    expect(p.warnings.map((w) => w.code)).toEqual(['no-flr', 'gpu-rom']);
    // Only the warning needs force; the info reason rides along.
    expect(warningsNeedingForce(p).map((w) => w.code)).toEqual(['no-flr']);
    const after = applyAll(new KernelSim(snap, {}), p.steps).state();
    expect(after['0000:00:03.1']).toEqual({ driver: 'pcieport', override: null });
    expectRollbackRestores(snap, p);
  });

  it('binds an mlx5 VF to its variant driver mlx5_vfio_pci', () => {
    const snap = snapshot(MLX_PF, MLX_VF0, MLX_VF1);
    const p = plan(snap, '0000:3b:00.2', 'vfio');
    expect(summary(p.steps)).toEqual([
      'modprobe mlx5_vfio_pci',
      'set-override "mlx5_vfio_pci" > /sys/bus/pci/devices/0000:3b:00.2/driver_override',
      'unbind "0000:3b:00.2" > /sys/bus/pci/drivers/mlx5_core/unbind',
      'probe "0000:3b:00.2" > /sys/bus/pci/drivers_probe',
      'verify 0000:3b:00.2 mlx5_vfio_pci',
    ]);
    expect(p.blastRadius).toEqual([
      expect.objectContaining({
        address: '0000:3b:00.2',
        reason: 'loses driver mlx5_core; ens1f0v0 disappears',
      }),
    ]);
    expectRollbackRestores(snap, p);
  });

  it('still overrides and probes an endpoint with no driver, so no host driver grabs it later', () => {
    const snap = snapshot(device('0000:05:00.0', { iommuGroup: 5 }));
    const p = plan(snap, '0000:05:00.0', 'vfio');
    expect(summary(p.steps)).toEqual([
      'modprobe vfio_pci',
      'set-override "vfio-pci" > /sys/bus/pci/devices/0000:05:00.0/driver_override',
      'probe "0000:05:00.0" > /sys/bus/pci/drivers_probe',
      'verify 0000:05:00.0 vfio-pci',
    ]);
    expect(summary(p.rollback)).toEqual([
      'restore-override "\\n" > /sys/bus/pci/devices/0000:05:00.0/driver_override',
      'unbind-current "0000:05:00.0" > /sys/bus/pci/devices/0000:05:00.0/driver/unbind',
      'verify 0000:05:00.0 none',
    ]);
    expect(p.blastRadius).toEqual([]);
    expectRollbackRestores(snap, p, { '0000:05:00.0': 'ixgbe' });
  });

  it('moves only what is not in place yet, and keeps in-place members in the preconditions', () => {
    const snap = snapshot(
      device('0000:06:00.0', { iommuGroup: 6, driver: 'vfio-pci', driverOverride: 'vfio-pci' }),
      device('0000:06:00.1', { iommuGroup: 6, driver: 'vfio-pci' }),
    );
    const p = plan(snap, '0000:06:00.0', 'vfio');
    expect(p.devices).toEqual(['0000:06:00.1']);
    expect(p.preconditions.map((c) => c.address)).toEqual(['0000:06:00.0', '0000:06:00.1']);
    expect(summary(p.steps)).toEqual([
      'modprobe vfio_pci',
      'set-override "vfio-pci" > /sys/bus/pci/devices/0000:06:00.1/driver_override',
      'verify 0000:06:00.1 vfio-pci',
    ]);
    expect(p.blastRadius).toEqual([]);
    // 06:00.1 got vfio-pci through vfio-pci.ids: its id table matches without an override.
    expectRollbackRestores(snap, p, { '0000:06:00.1': 'vfio-pci' });
  });

  it('moves a device from vfio-pci to its variant driver', () => {
    const snap = snapshot({ ...MLX_VF0, driver: 'vfio-pci', driverOverride: 'vfio-pci' });
    const p = plan(snap, '0000:3b:00.2', 'vfio');
    expect(summary(p.steps)).toContain(
      'unbind "0000:3b:00.2" > /sys/bus/pci/drivers/vfio-pci/unbind',
    );
    expect(p.blastRadius[0]?.reason).toBe(
      'moves from vfio-pci to mlx5_vfio_pci; a VM using it loses it; ens1f0v0 disappears',
    );
    expectRollbackRestores(snap, p, {}, ['vfio-pci']);
  });

  it('reports alreadyDone with no steps when the whole group is on vfio with the override set', () => {
    const snap = snapshot(
      bridge('0000:00:03.1', 1),
      ...GPU_GROUP.filter((d) => d.kind === 'endpoint').map((d) => ({
        ...d,
        driver: 'vfio-pci',
        driverOverride: 'vfio-pci',
        readiness: { status: 'bound' as const, reasons: [] },
      })),
    );
    const p = plan(snap, '0000:01:00.0', 'vfio');
    expect(p).toMatchObject({ alreadyDone: true, steps: [], rollback: [], blastRadius: [] });
    expect(p.devices).toEqual(['0000:01:00.0', '0000:01:00.1']);
  });

  it('puts the VFs of a PF in the blast radius: they vanish when its driver is unbound', () => {
    const snap = snapshot(MLX_PF, MLX_VF0, MLX_VF1);
    const p = plan(snap, '0000:3b:00.0', 'vfio');
    expect(p.devices).toEqual(['0000:3b:00.0']);
    expect(p.blastRadius.map((e) => [e.address, e.driver, e.netInterfaces])).toEqual([
      ['0000:3b:00.0', 'mlx5_core', ['ens1f0np0']],
      ['0000:3b:00.2', 'mlx5_core', ['ens1f0v0']],
      ['0000:3b:00.3', 'mlx5_core', ['ens1f0v1']],
    ]);
    expect(p.blastRadius[1]?.reason).toMatch(
      /^VF of 0000:3b:00\.0: disappears when 0000:3b:00\.0 leaves mlx5_core/,
    );
    expect(p.blastRadius[1]?.reason).toMatch(/ens1f0v0 disappears$/);
  });

  it('does not try to move a VF that shares its PF group: it vanishes with the PF', () => {
    const snap = snapshot(MLX_PF, { ...MLX_VF0, iommuGroup: 20 }, MLX_VF1);
    const p = plan(snap, '0000:3b:00.0', 'vfio');
    expect(p.devices).toEqual(['0000:3b:00.0']);
    expect(p.blastRadius.map((e) => e.address)).toEqual([
      '0000:3b:00.0',
      '0000:3b:00.2',
      '0000:3b:00.3',
    ]);
  });
});

describe('planRebind refusals', () => {
  it('refuses a bridge as the target', () => {
    const r = refusal(planRebind(snapshot(...GPU_GROUP), '00:03.1', 'vfio'));
    expect(r.code).toBe('not-endpoint');
    expect(r.message).toContain('0000:00:03.1');
  });

  it('refuses a blocked device with all its error reasons and no plan', () => {
    const blocked = device('0000:02:00.0', {
      iommuGroup: 2,
      driver: 'nvme',
      readiness: {
        status: 'blocked',
        reasons: [
          reason('host-critical', 'error', 'holds the root filesystem'),
          reason('group-shared', 'error', 'shares its group with 0000:02:00.1'),
          reason('no-flr', 'warning', 'no function-level reset'),
        ],
      },
    });
    const result = planRebind(snapshot(blocked), '0000:02:00.0', 'vfio');
    expect(result.ok).toBe(false);
    expect('plan' in result).toBe(false);
    const r = refusal(result);
    expect(r.code).toBe('blocked');
    expect(r.reasons.map((x) => x.code)).toEqual(['host-critical', 'group-shared']);
    expect(r.message).toContain('holds the root filesystem');
  });

  it('refuses when another endpoint of the group is blocked: it would move too', () => {
    const snap = snapshot(
      device('0000:07:00.0', { iommuGroup: 7, driver: 'i40e' }),
      device('0000:07:00.1', {
        iommuGroup: 7,
        driver: 'i40e',
        readiness: {
          status: 'blocked',
          reasons: [reason('host-critical', 'error', 'carries the default route')],
        },
      }),
    );
    const r = refusal(planRebind(snap, '0000:07:00.0', 'vfio'));
    expect(r.code).toBe('blocked');
    expect(r.reasons.map((x) => x.code)).toEqual(['host-critical']);
  });

  it('refuses an unknown address and a garbage one, naming the input', () => {
    const snap = snapshot(NIC);
    const unknown = refusal(planRebind(snap, '0000:99:00.0', 'vfio'));
    expect(unknown).toMatchObject({ code: 'unknown-device', reasons: [] });
    expect(unknown.message).toContain('0000:99:00.0');
    const garbage = refusal(planRebind(snap, 'zz:top', 'host'));
    expect(garbage.code).toBe('unknown-device');
    expect(garbage.message).toContain('"zz:top"');
    const huge = refusal(planRebind(snap, 'x'.repeat(100_000), 'vfio'));
    expect(huge.message.length).toBeLessThan(300);
  });

  it('refuses an endpoint without a vfio driver selection', () => {
    const r = refusal(
      planRebind(snapshot(device('0000:08:00.0', { vfio: null })), '0000:08:00.0', 'vfio'),
    );
    expect(r.code).toBe('no-vfio-driver');
  });
});

describe('planRebind to host', () => {
  const onVfio = device('0000:3b:00.0', {
    iommuGroup: 12,
    driver: 'vfio-pci',
    driverModule: 'vfio_pci',
    driverOverride: 'vfio-pci',
    // Restoring never looks at readiness: even a blocked device can go back.
    readiness: { status: 'blocked', reasons: [reason('host-critical', 'error', 'root disk')] },
  });

  it('clears the override with a newline, reprobes and verifies it left vfio', () => {
    const snap = snapshot(onVfio);
    const p = plan(snap, '0000:3b:00.0', 'host');
    expect(p).toMatchObject({
      target: 'host',
      devices: ['0000:3b:00.0'],
      alreadyDone: false,
      warnings: [],
    });
    expect(p.steps).toEqual([
      {
        action: 'clear-override',
        address: '0000:3b:00.0',
        path: '/sys/bus/pci/devices/0000:3b:00.0/driver_override',
        value: '\n',
        description: expect.any(String),
      },
      {
        action: 'unbind',
        address: '0000:3b:00.0',
        driver: 'vfio-pci',
        path: '/sys/bus/pci/drivers/vfio-pci/unbind',
        value: '0000:3b:00.0',
        description: expect.any(String),
      },
      {
        action: 'probe',
        address: '0000:3b:00.0',
        path: '/sys/bus/pci/drivers_probe',
        value: '0000:3b:00.0',
        description: expect.any(String),
      },
      {
        action: 'verify-driver',
        address: '0000:3b:00.0',
        expect: { kind: 'not-vfio' },
        description: expect.any(String),
      },
    ]);
    expect(p.blastRadius).toEqual([
      expect.objectContaining({
        address: '0000:3b:00.0',
        driver: 'vfio-pci',
        reason: 'leaves vfio-pci; a VM using it loses it',
      }),
    ]);
    const hostDrivers = { '0000:3b:00.0': 'i40e' };
    expect(applyAll(new KernelSim(snap, hostDrivers), p.steps).state()['0000:3b:00.0']).toEqual({
      driver: 'i40e',
      override: null,
    });
    expectRollbackRestores(snap, p, hostDrivers);
  });

  it('restores a group, including an unbound member left with a vfio override', () => {
    const snap = snapshot(
      bridge('0000:00:03.1', 1),
      device('0000:01:00.0', { driver: 'vfio-pci', driverOverride: 'vfio-pci' }),
      device('0000:01:00.1', { driverOverride: 'vfio-pci' }),
    );
    const p = plan(snap, '0000:01:00.0', 'host');
    expect(p.devices).toEqual(['0000:01:00.0', '0000:01:00.1']);
    expect(summary(p.steps).slice(4)).toEqual([
      'clear-override "\\n" > /sys/bus/pci/devices/0000:01:00.1/driver_override',
      'probe "0000:01:00.1" > /sys/bus/pci/drivers_probe',
      'verify 0000:01:00.1 not-vfio',
    ]);
    const hostDrivers = { '0000:01:00.0': 'nvidia', '0000:01:00.1': 'snd_hda_intel' };
    expectRollbackRestores(snap, p, hostDrivers);
  });

  it("warns that a VF stays unbound when its PF's sriov_drivers_autoprobe is 0", () => {
    const vf = { ...MLX_VF0, driver: 'mlx5_vfio_pci', driverOverride: 'mlx5_vfio_pci' };
    const off = {
      ...MLX_PF,
      sriov: { ...(MLX_PF.sriov ?? { totalVfs: 8, numVfs: 2, vfs: [] }), driversAutoprobe: false },
    };
    const warned = plan(snapshot(off, vf, MLX_VF1), vf.address, 'host').warnings;
    expect(warned.map((w) => w.code)).toContain('vf-autoprobe-off');
    expect(warned.find((w) => w.code === 'vf-autoprobe-off')?.related).toEqual([MLX_PF.address]);
    // Giving a device back never needs force, warned or not.
    expect(warningsNeedingForce(plan(snapshot(off, vf, MLX_VF1), vf.address, 'host'))).toEqual([]);
    const quiet = plan(snapshot(MLX_PF, vf, MLX_VF1), vf.address, 'host').warnings;
    expect(quiet.map((w) => w.code)).not.toContain('vf-autoprobe-off');
  });

  it('says when another keeper binds a device to vfio again at boot, but not for our own record', () => {
    const kept = device('0000:3b:00.0', {
      ...onVfio,
      keptBy: [
        { keeper: 'vfio-fleet', driver: 'vfio-pci', source: 'bindings.json' },
        { keeper: 'driverctl', driver: 'vfio-pci', source: '/etc/driverctl.d/pci-0000:3b:00.0' },
        { keeper: 'modprobe.d', driver: 'vfio-pci', source: '/etc/modprobe.d/vfio.conf' },
      ],
    });
    const p = plan(snapshot(kept), kept.address, 'host');
    expect(p.warnings).toEqual([
      {
        code: 'kept-on-vfio-at-boot',
        severity: 'info',
        message:
          '0000:3b:00.0 goes back to vfio at the next reboot: bound there at boot by driverctl (/etc/driverctl.d/pci-0000:3b:00.0), modprobe.d (/etc/modprobe.d/vfio.conf).',
        remedy: expect.stringContaining('Remove it from driverctl'),
        related: [],
      },
    ]);
    expect(warningsNeedingForce(p)).toEqual([]);
    const ours = device('0000:3b:00.0', {
      ...onVfio,
      keptBy: [kept.keptBy[0]].flatMap((k) => (k === undefined ? [] : [k])),
    });
    expect(plan(snapshot(ours), ours.address, 'host').warnings).toEqual([]);
  });

  it('refuses nothing-to-do when nothing in the group is on vfio', () => {
    const r = refusal(planRebind(snapshot(NIC), '0000:3b:00.0', 'host'));
    expect(r).toMatchObject({ code: 'nothing-to-do', reasons: [] });
  });
});

describe('rollback', () => {
  it('restores an override that named another driver than the bound one, and the binding', () => {
    // Bound to i40e while driver_override already says vfio-pci (written, never reprobed): a plain
    // bind to i40e would fail while the override stands, so rollback clears, binds, then restores.
    const snap = snapshot({ ...NIC, driverOverride: 'vfio-pci' });
    const p = plan(snap, '0000:3b:00.0', 'vfio');
    expect(summary(p.steps)).not.toContain('set-override');
    expect(summary(p.rollback)).toEqual([
      'restore-override "\\n" > /sys/bus/pci/devices/0000:3b:00.0/driver_override',
      'unbind-current "0000:3b:00.0" > /sys/bus/pci/devices/0000:3b:00.0/driver/unbind',
      'bind "0000:3b:00.0" > /sys/bus/pci/drivers/i40e/bind',
      'restore-override "vfio-pci" > /sys/bus/pci/devices/0000:3b:00.0/driver_override',
      'verify 0000:3b:00.0 i40e',
    ]);
    expectRollbackRestores(snap, p);
  });

  it('restores a foreign override on an unbound device', () => {
    const snap = snapshot(device('0000:09:00.0', { iommuGroup: 9, driverOverride: 'pci-stub' }));
    const p = plan(snap, '0000:09:00.0', 'vfio');
    expect(summary(p.rollback)[0]).toBe(
      'restore-override "pci-stub" > /sys/bus/pci/devices/0000:09:00.0/driver_override',
    );
    expectRollbackRestores(snap, p, {}, ['pci-stub']);
  });

  it('undoes every prefix of the GPU group plan on the simulated kernel', () => {
    const snap = snapshot(...GPU_GROUP);
    expectRollbackRestores(snap, plan(snap, '0000:01:00.0', 'vfio'));
  });
});

describe('plan steps on the wire', () => {
  it('never touch new_id, in steps or rollback', () => {
    expect(allPlans.length).toBeGreaterThan(10);
    for (const p of allPlans) {
      for (const step of [...p.steps, ...p.rollback]) {
        expect(JSON.stringify(step)).not.toMatch(/new_id|remove_id/);
      }
    }
  });

  it('rejects a step whose path does not match its action and address', () => {
    const good: PlanStep = {
      action: 'unbind',
      address: '0000:3b:00.0',
      driver: 'i40e',
      path: '/sys/bus/pci/drivers/i40e/unbind',
      value: '0000:3b:00.0',
      description: 'Unbind it.',
    };
    expect(planStepSchema.parse(good)).toEqual(good);
    expect(
      planStepSchema.safeParse({ ...good, path: '/sys/bus/pci/drivers/i40e/new_id' }).success,
    ).toBe(false);
    expect(planStepSchema.safeParse({ ...good, value: '0000:3b:00.1' }).success).toBe(false);
    expect(planStepSchema.safeParse({ ...good, driver: '../../x' }).success).toBe(false);
    const override = {
      action: 'set-override',
      address: '0000:3b:00.0',
      path: '/sys/bus/pci/devices/0000:3b:00.1/driver_override',
      value: 'vfio-pci',
      description: 'Override.',
    };
    expect(planStepSchema.safeParse(override).success).toBe(false);
    const fixed = { ...override, path: '/sys/bus/pci/devices/0000:3b:00.0/driver_override' };
    expect(planStepSchema.safeParse(fixed).success).toBe(true);
    // Forward steps only ever point a device at a vfio driver. Which modules a plan may load
    // depends on its direction, so that is the plan's check (restore-expect.test.ts).
    expect(planStepSchema.safeParse({ ...fixed, value: 'nvidia' }).success).toBe(false);
  });
});
