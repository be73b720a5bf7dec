// The agent on a real sysfs snapshot (ghw's QEMU guest with a Tesla P100): real link layouts,
// real attribute formats, links that dangle because only part of sysfs was captured.
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { readModulesAlias, testdataPath, unpackTestdata } from '@vfio-fleet/testdata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';

const VARIANTS = '6.12.117+deb12-amd64+vfio-variants';
let root: string;
let snapshot: HostSnapshot;

/** address → modalias, from the TSV that lists every modalias file in the tarball. */
async function expectedModaliases(): Promise<Map<string, string>> {
  const tsv = await readFile(
    testdataPath('sysfs/ghw-linux-amd64-accel-nvidia.modalias.tsv'),
    'utf8',
  );
  const map = new Map<string, string>();
  for (const line of tsv.split('\n')) {
    const [file, modalias] = line.split('\t');
    if (file === undefined || modalias === undefined) continue;
    map.set(path.basename(path.dirname(file)), modalias.trim());
  }
  return map;
}

beforeAll(async () => {
  root = await unpackTestdata('sysfs/ghw-linux-amd64-accel-nvidia.tar.gz');
  snapshot = await collectHost(new HostFs(root));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('scan of the ghw accel-nvidia snapshot', () => {
  it('reads all 29 devices with their real modaliases', async () => {
    const expected = await expectedModaliases();
    expect(expected.size).toBe(29);
    expect(snapshot.devices).toHaveLength(29);
    for (const device of snapshot.devices) {
      expect(device.modalias, device.address).toBe(expected.get(device.address));
    }
  });

  it('finds the Tesla P100 on the nvidia driver, and its parent root port', () => {
    const p100 = snapshot.devices.find((d) => d.vendorId === '10de' && d.deviceId === '15f8');
    expect(p100).toMatchObject({ driver: 'nvidia', classCode: '030200', kind: 'endpoint' });
    expect(p100).toMatchObject({ address: '0000:06:00.0', parent: '0000:00:01.5' });
    expect(p100?.vfioDriver).toBe('vfio_pci');
  });

  it('names the root disk controller from the dangling /sys/block/sda link', () => {
    // sda -> ../devices/pci0000:00/0000:00:01.1/0000:02:00.0/virtio6/... (target not captured).
    expect(snapshot.host.critical).toContainEqual(
      expect.objectContaining({ address: '0000:02:00.0', kind: 'root-disk' }),
    );
    const disk = snapshot.devices.find((d) => d.address === '0000:02:00.0');
    expect(disk?.readiness.reasons.map((r) => r.code)).toContain('host-critical');
  });

  it('reports the IOMMU off, and every device blocked by it', () => {
    expect(snapshot.host.iommu.enabled).toBe(false);
    expect(snapshot.groups).toEqual([]);
    expect(snapshot.host.cpuVendor).toBe('intel');
    expect(snapshot.host.virtualMachine).toBe(true);
    for (const device of snapshot.devices) {
      expect(device.iommuGroup).toBeNull();
      expect(device.readiness.status).toBe('blocked');
      expect(device.readiness.reasons.map((r) => r.code)).toContain('iommu-off');
    }
    expect(snapshot.problems.map((p) => p.message)).toContain(
      'no IOMMU groups: /sys/kernel/iommu_groups is empty (IOMMU off or absent; no device can use vfio)',
    );
  });

  it('selects virtio_vfio_pci for the virtio-net function given a kernel that has it', async () => {
    // The snapshot has no /proc/sys/kernel/osrelease or /lib/modules: add a real modules.alias.
    await mkdir(path.join(root, 'proc/sys/kernel'), { recursive: true });
    await writeFile(path.join(root, 'proc/sys/kernel/osrelease'), `${VARIANTS}\n`);
    await mkdir(path.join(root, 'lib/modules', VARIANTS), { recursive: true });
    await writeFile(
      path.join(root, 'lib/modules', VARIANTS, 'modules.alias'),
      readModulesAlias(VARIANTS),
    );
    const withAliases = await collectHost(new HostFs(root));
    const net = withAliases.devices.find((d) => d.address === '0000:05:00.0');
    expect(net).toMatchObject({
      vendorId: '1af4',
      deviceId: '1041',
      vfioDriver: 'virtio_vfio_pci',
    });
    expect(net?.vfio?.source).toBe('alias');
    expect(withAliases.host.modulesAlias).toMatchObject({
      path: `/lib/modules/${VARIANTS}/modules.alias`,
      vfioAliases: 12,
    });
  });
});
