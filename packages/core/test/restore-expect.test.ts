// A restore ends each device on the host driver it had (issue 17 part 5): the plan loads that
// driver's module when asked, verifies the exact driver, and the wire schema keeps modprobe honest.
import { describe, expect, it } from 'vitest';
import type { DeviceFacts, HostFactsSnapshot } from '../src/inventory/schema';
import { AliasIndex } from '../src/kmod/alias-index';
import { parseModulesAlias } from '../src/kmod/modules-alias';
import { type HostDriverExpectation, planRebind } from '../src/plan/plan-rebind';
import { hostDriverFromAliases } from '../src/plan/restore-expect';
import { type RebindPlan, rebindPlanSchema } from '../src/plan/schema';
import { assessSnapshot } from '../src/readiness/assess';
import { AUDIO, audio, GPU, makeDevice, makeHost, rootPort } from './readiness-fixtures';

function snapshotOf(...devices: DeviceFacts[]) {
  const members = devices.filter((d) => d.iommuGroup === 1).map((d) => d.address);
  const facts: HostFactsSnapshot = {
    schemaVersion: 1,
    collectedAt: '2026-12-07T00:00:00Z',
    host: makeHost(),
    devices,
    groups: [{ id: 1, devices: members }],
    problems: [],
  };
  return assessSnapshot(facts);
}

const onVfio = { driver: 'vfio-pci', driverModule: 'vfio_pci', driverOverride: 'vfio-pci' };
const host = snapshotOf(
  rootPort('0000:00:01.0', { iommuGroup: 1 }),
  makeDevice(GPU, onVfio),
  audio(AUDIO, onVfio),
);

function restore(hostDrivers?: ReadonlyMap<string, HostDriverExpectation>): RebindPlan {
  const result = planRebind(host, GPU, 'host', hostDrivers === undefined ? {} : { hostDrivers });
  if (!result.ok) throw new Error(result.refusal.message);
  expect(rebindPlanSchema.parse(result.plan)).toEqual(result.plan);
  return result.plan;
}

const verifies = (plan: RebindPlan) =>
  plan.steps.flatMap((s) => (s.action === 'verify-driver' ? [[s.address, s.expect]] : []));

describe('restore to the driver each device had', () => {
  it('verifies the exact host driver, loading a module that is not loaded first', () => {
    const plan = restore(
      new Map([
        [GPU, { driver: 'nvidia', module: 'nvidia' }],
        [AUDIO, { driver: 'snd_hda_intel', module: null }],
      ]),
    );
    expect(plan.steps[0]).toMatchObject({ action: 'modprobe', module: 'nvidia' });
    expect(plan.steps.filter((s) => s.action === 'modprobe')).toHaveLength(1);
    expect(verifies(plan)).toEqual([
      [GPU, { kind: 'driver', driver: 'nvidia' }],
      [AUDIO, { kind: 'driver', driver: 'snd_hda_intel' }],
    ]);
  });

  it('expects no driver for a device no host driver claims, and only off-vfio when unknown', () => {
    const plan = restore(new Map([[GPU, { driver: null, module: null }]]));
    expect(plan.steps.some((s) => s.action === 'modprobe')).toBe(false);
    expect(verifies(plan)).toEqual([
      [GPU, { kind: 'none' }],
      [AUDIO, { kind: 'not-vfio' }],
    ]);
    expect(verifies(restore())).toEqual([
      [GPU, { kind: 'not-vfio' }],
      [AUDIO, { kind: 'not-vfio' }],
    ]);
  });

  it('an operator override (not vfio) wins over the record: drivers_probe honours it', () => {
    const held = snapshotOf(
      rootPort('0000:00:01.0', { iommuGroup: 1 }),
      makeDevice(GPU, { ...onVfio, driverOverride: 'nouveau' }),
    );
    const result = planRebind(held, GPU, 'host', {
      hostDrivers: new Map([[GPU, { driver: 'nvidia', module: 'nvidia' }]]),
    });
    expect(result.ok && verifies(result.plan)).toEqual([
      [GPU, { kind: 'driver', driver: 'nouveau' }],
    ]);
  });
});

describe('which modules a plan may load', () => {
  const base = restore(new Map([[GPU, { driver: 'nvidia', module: 'nvidia' }]]));
  it('a restore loads host drivers, never a vfio module; a plan to vfio only vfio modules', () => {
    expect(rebindPlanSchema.safeParse(base).success).toBe(true);
    const vfioLoad = { action: 'modprobe' as const, module: 'vfio_pci', description: 'Load.' };
    expect(rebindPlanSchema.safeParse({ ...base, steps: [vfioLoad] }).success).toBe(false);
    const toVfio = { ...base, target: 'vfio' as const };
    expect(rebindPlanSchema.safeParse({ ...toVfio, steps: [vfioLoad] }).success).toBe(true);
    expect(rebindPlanSchema.safeParse(toVfio).success).toBe(false);
    expect(rebindPlanSchema.safeParse({ ...base, rollback: base.steps }).success).toBe(false);
  });
});

describe('hostDriverFromAliases', () => {
  const aliases = AliasIndex.build(
    parseModulesAlias(
      [
        'alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau',
        'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci',
        'alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia',
      ].join('\n'),
    ).entries,
  );
  const modalias = 'pci:v000010DEd00002204sv000010DEsd0000147Dbc03sc00i00';

  it('the first matching pci: alias in file order, to be loaded when it is not', () => {
    expect(hostDriverFromAliases(aliases, modalias, new Map())).toEqual({
      driver: 'nouveau',
      module: 'nouveau',
    });
  });

  it('a loaded module first: its driver is registered, so a probe finds it', () => {
    const loaded = new Map([['nvidia', 'nvidia']]);
    expect(hostDriverFromAliases(aliases, modalias, loaded)).toEqual({
      driver: 'nvidia',
      module: null,
    });
  });

  it('a blacklisted module is skipped as kmod does, unless it is loaded anyway', () => {
    const blacklist = new Set(['nouveau']);
    expect(hostDriverFromAliases(aliases, modalias, new Map(), blacklist)).toEqual({
      driver: 'nvidia',
      module: 'nvidia',
    });
    const loaded = new Map([['nouveau', 'nouveau']]);
    expect(hostDriverFromAliases(aliases, modalias, loaded, blacklist)).toEqual({
      driver: 'nouveau',
      module: null,
    });
  });

  it('no pci: alias (vfio_pci ones do not count): no host driver', () => {
    const audioAlias = 'pci:v000010DEd00001AEFsv000010DEsd0000147Dbc04sc03i00';
    expect(hostDriverFromAliases(aliases, audioAlias, new Map())).toEqual({
      driver: null,
      module: null,
    });
  });
});
