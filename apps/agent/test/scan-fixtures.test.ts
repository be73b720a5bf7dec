// scan on generated host trees (packages/host-fixtures): the JSON contract scripts rely on, and
// the human table, for each scenario the fixtures describe.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Device, type HostSnapshot, planRebind } from '@vfio-fleet/core';
import { buildScenario, corruptDevice } from '@vfio-fleet/host-fixtures';
import { readModulesAlias } from '@vfio-fleet/testdata';
import { afterAll, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';
import { renderScanReport } from '../src/render/scan-report';
import { createStyle } from '../src/render/style';
import { runAgent } from './helpers/run-agent';

const VARIANTS_ALIAS = readModulesAlias('6.12.117+deb12-amd64+vfio-variants');
const roots: string[] = [];

type ScenarioName = Parameters<typeof buildScenario>[1];

async function scanScenario(name: ScenarioName): Promise<{ root: string; snapshot: HostSnapshot }> {
  const root = await mkdtemp(path.join(tmpdir(), `agent-${name}-`));
  roots.push(root);
  await buildScenario(root, name, { modulesAlias: VARIANTS_ALIAS });
  return { root, snapshot: await collectHost(new HostFs(root)) };
}

function codes(device: Device | undefined): string[] {
  return device?.readiness.reasons.map((reason) => reason.code) ?? [];
}

function byClass(snapshot: HostSnapshot, prefix: string): Device[] {
  return snapshot.devices.filter((device) => device.classCode.startsWith(prefix));
}

afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

describe('scan of fixture scenarios', () => {
  it('dual-gpu: both GPUs get vfio_pci; the group table names groups and reasons', async () => {
    const { root, snapshot } = await scanScenario('dual-gpu');
    expect(snapshot.host.iommu.enabled).toBe(true);
    // Two discrete NVIDIA GPUs (plus the BMC's ASPEED VGA, which the console is on).
    const gpus = byClass(snapshot, '0300').filter((gpu) => gpu.vendorId === '10de');
    expect(gpus.length).toBe(2);
    for (const gpu of gpus) {
      expect(gpu).toMatchObject({ vfioDriver: 'vfio_pci', readiness: { status: 'ready' } });
      expect(codes(gpu)).toContain('group-shared');
    }
    const console = snapshot.devices.find((d) => d.bootVga);
    expect(codes(console)).toContain('host-critical');
    const report = renderScanReport(snapshot, createStyle(false));
    for (const group of snapshot.groups) expect(report).toContain(`IOMMU group ${group.id} (`);
    for (const device of snapshot.devices) {
      const reason = device.readiness.reasons[0];
      if (reason !== undefined) expect(report).toContain(reason.message);
    }
    const cli = runAgent(['scan', '--root', root]);
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toBe(report);
  });

  it('mlx5-vf: the VF gets mlx5_vfio_pci from the real vfio-variants modules.alias', async () => {
    const { snapshot } = await scanScenario('mlx5-vf');
    const vfs = snapshot.devices.filter((d) => d.physfn !== null);
    expect(vfs.length).toBeGreaterThan(0);
    for (const vf of vfs) {
      expect(vf).toMatchObject({ vendorId: '15b3', deviceId: '101e', vfioDriver: 'mlx5_vfio_pci' });
      expect(vf.vfio?.source).toBe('alias');
    }
    const pf = snapshot.devices.find((d) => d.sriov !== null);
    expect(pf?.sriov?.vfs).toEqual(expect.arrayContaining(vfs.map((vf) => vf.address)));
    expect(snapshot.host.modulesAlias.vfioAliases).toBe(12);
  });

  it('critical-nvme-nic: the root NVMe and the default-route NIC are blocked as host-critical', async () => {
    const { snapshot } = await scanScenario('critical-nvme-nic');
    const kinds = snapshot.host.critical.map((c) => c.kind);
    expect(kinds).toEqual(expect.arrayContaining(['root-disk', 'default-route']));
    for (const critical of snapshot.host.critical) {
      const device = snapshot.devices.find((d) => d.address === critical.address);
      expect(device?.readiness.status).toBe('blocked');
      expect(codes(device)).toContain('host-critical');
    }
    const nvme = byClass(snapshot, '0108').find((d) =>
      snapshot.host.critical.some((c) => c.address === d.address),
    );
    expect(nvme).toBeDefined();
    const nic = byClass(snapshot, '0200').find((d) => d.netInterfaces.length > 0);
    expect(nic).toBeDefined();
  });

  it('critical-nvme-nic: a device sharing a group with a critical one is blocked as group-shared', async () => {
    const { snapshot } = await scanScenario('critical-nvme-nic');
    const all = snapshot.devices.flatMap((device) => codes(device));
    expect(all).toContain('group-shared');
  });

  it('iommu-off: no groups, every device blocked by iommu-off', async () => {
    const { snapshot } = await scanScenario('iommu-off');
    expect(snapshot.host.iommu.enabled).toBe(false);
    expect(snapshot.groups).toEqual([]);
    expect(snapshot.devices.length).toBeGreaterThan(0);
    for (const device of snapshot.devices) {
      expect(device.readiness.status).toBe('blocked');
      expect(codes(device)).toContain('iommu-off');
    }
    const report = renderScanReport(snapshot, createStyle(false));
    expect(report).toContain('no IOMMU group (');
    expect(report).toContain('no device can be passed through: iommu-off blocks');
  });

  it('vfio-bound: a device on its vfio driver reads as bound', async () => {
    const { snapshot } = await scanScenario('vfio-bound');
    const bound = snapshot.devices.filter((d) => d.readiness.status === 'bound');
    expect(bound.length).toBeGreaterThan(0);
    for (const device of bound) expect(device.driver).toMatch(/vfio/);
    expect(snapshot.host.vfio.modulesLoaded.length).toBeGreaterThan(0);
  });
});

describe('a device whose sysfs files are garbage', () => {
  const GPU = '0000:17:00.0';
  const AUDIO = '0000:17:00.1';

  /** dual-gpu with the first GPU's audio function damaged: vendor "zzz", no class, bad modalias. */
  async function damaged(): Promise<{ root: string; snapshot: HostSnapshot }> {
    const root = await mkdtemp(path.join(tmpdir(), 'agent-garbage-'));
    roots.push(root);
    await buildScenario(root, 'dual-gpu', { modulesAlias: VARIANTS_ALIAS });
    await corruptDevice(root, AUDIO);
    return { root, snapshot: await collectHost(new HostFs(root)) };
  }

  it('is kept as an unreadable member of its group, which blocks its group mate', async () => {
    const { snapshot } = await damaged();
    expect(snapshot.devices.map((d) => d.address)).not.toContain(AUDIO);
    const problem = snapshot.problems.find((p) => p.device?.address === AUDIO);
    expect(problem).toMatchObject({
      source: `/sys/bus/pci/devices/${AUDIO}`,
      device: { address: AUDIO, iommuGroup: 21, driver: 'snd_hda_intel' },
    });
    expect(problem?.message).toContain('vendor reads "zzz"');
    expect(problem?.message).toContain('class is missing or unreadable');
    expect(problem?.message).toContain('modalias reads "garbage"');

    const gpu = snapshot.devices.find((d) => d.address === GPU);
    expect(gpu?.readiness.status).toBe('blocked');
    const reason = gpu?.readiness.reasons[0];
    expect(reason).toMatchObject({ code: 'group-member-unreadable', severity: 'error' });
    expect(reason?.related).toEqual([AUDIO]);
    expect(reason?.message).toContain(`IOMMU group 21 also holds ${AUDIO} on snd_hda_intel`);
    expect(reason?.message).toContain('vendor reads "zzz"');
    // The other GPU's group is whole: it stays ready.
    expect(snapshot.devices.find((d) => d.address === '0000:31:00.0')?.readiness.status).toBe(
      'ready',
    );

    const report = renderScanReport(snapshot, createStyle(false));
    expect(report).toContain(`${AUDIO} could not be read (vendor reads "zzz"`);
    expect(report).toContain('IOMMU group 21 (1 device, 1 unreadable)');
    expect(report).toContain(': IOMMU group 21 is blocked');
  });

  it('is never planned around, in either direction', async () => {
    const { snapshot } = await damaged();
    for (const target of ['vfio', 'host'] as const) {
      const result = planRebind(snapshot, GPU, target);
      expect(result.ok).toBe(false);
      if (result.ok) continue;
      expect(result.refusal.code).toBe('group-unreadable');
      expect(result.refusal.message).toContain(`IOMMU group 21 of ${GPU} is not planned: ${AUDIO}`);
      expect(result.refusal.reasons.map((r) => r.code)).toEqual(['group-member-unreadable']);
    }
  });
});
