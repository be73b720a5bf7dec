import { describe, expect, it } from 'vitest';
import { bootFate, describeBootFate, type KeptBy } from '../src';

const persisted: KeptBy = { keeper: 'vfio-fleet', driver: 'vfio-pci', source: 'bindings.json' };
const driverctl: KeptBy = {
  keeper: 'driverctl',
  driver: 'vfio-pci',
  source: '/etc/driverctl.d/pci-0000:01:00.0',
};

describe('bootFate', () => {
  it('a vfio binding nothing re-creates is lost at reboot', () => {
    const fate = bootFate({ driver: 'vfio-pci', keptBy: [] });
    expect(fate).toEqual({ kind: 'lost' });
    expect(describeBootFate(fate)).toBe('nobody keeps it (lost at reboot)');
  });

  it('names every keeper once, in the order found', () => {
    const fate = bootFate({ driver: 'mlx5_vfio_pci', keptBy: [persisted, driverctl, persisted] });
    expect(describeBootFate(fate)).toBe('kept by vfio-fleet, driverctl');
  });

  it('a keeper that binds it to a host driver does not keep it on vfio', () => {
    const toHost: KeptBy = { ...driverctl, driver: 'nvidia' };
    expect(bootFate({ driver: 'vfio-pci', keptBy: [toHost] })).toEqual({ kind: 'lost' });
  });

  it('says nothing of a device not on vfio, even with a vfio claim (not in effect)', () => {
    const fate = bootFate({ driver: 'nvidia', keptBy: [persisted] });
    expect(fate).toEqual({ kind: 'not-bound' });
    expect(describeBootFate(fate)).toBeNull();
    expect(bootFate({ driver: null, keptBy: [] }).kind).toBe('not-bound');
  });
});
