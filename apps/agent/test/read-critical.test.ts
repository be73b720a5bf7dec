// Host-critical detection on small real trees shaped like the kernel's: device-number lookup,
// dm stacks, /dev/root, bonds over VLANs, reject routes, the fbcon console.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { readCritical } from '../src/inventory/read-critical';
import { parseCmdline } from '../src/inventory/read-kernel';

const NVME = 'devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1';
const SATA = 'devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda';
const NIC = 'devices/pci0000:00/0000:00:1c.0/0000:02:00.0/net/eno1';
const V4_HEADER =
  'Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n';
const noDevices: Array<{ address: string; bootVga: boolean }> = [];
let root: string;

async function tree(files: Record<string, string>, links: Record<string, string>) {
  root = await mkdtemp(path.join(tmpdir(), 'critical-'));
  for (const [file, text] of Object.entries(files)) {
    await mkdir(path.join(root, path.dirname(file)), { recursive: true });
    await writeFile(path.join(root, file), text);
  }
  for (const [at, target] of Object.entries(links)) {
    await mkdir(path.join(root, path.dirname(at)), { recursive: true });
    await symlink(target, path.join(root, at));
  }
  return new HostFs(root);
}

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('root disk', () => {
  it('follows the / mount device number through /sys/dev/block', async () => {
    const fs = await tree(
      {
        'proc/self/mountinfo':
          '1 0 0:22 / /sys rw - sysfs sysfs rw\n29 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n',
        [`sys/${NVME}/nvme0n1p2/partition`]: '2\n',
      },
      { 'sys/dev/block/259:2': `../../${NVME}/nvme0n1p2` },
    );
    const { critical } = await readCritical(fs, { devices: noDevices, cmdlineParams: new Map() });
    expect(critical).toEqual([
      { address: '0000:3d:00.0', kind: 'root-disk', detail: '/ on /dev/nvme0n1p2' },
    ]);
  });

  it('finds the controllers of a native-multipath NVMe namespace (nvme-subsystem layout)', async () => {
    const sub = 'devices/virtual/nvme-subsystem/nvme-subsys0';
    const ctrl = 'devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0';
    const fs = await tree(
      {
        'proc/self/mountinfo': '29 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n',
        [`sys/${sub}/nvme0n1/nvme0n1p2/partition`]: '2\n',
        [`sys/${ctrl}/nvme0c0n1/dev`]: '259:0\n',
        'sys/devices/pci0000:00/0000:00:1c.0/0000:5e:00.0/nvme/nvme1/state': 'live\n',
      },
      {
        'sys/dev/block/259:2': `../../${sub}/nvme0n1/nvme0n1p2`,
        [`sys/${sub}/nvme0`]: '../../../pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0',
        // A second path to the same namespace through another controller (dual-ported drive).
        [`sys/${sub}/nvme1`]: '../../../pci0000:00/0000:00:1c.0/0000:5e:00.0/nvme/nvme1',
        [`sys/${sub}/nvme0n1/multipath/nvme0c0n1`]:
          '../../../../../pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0c0n1',
      },
    );
    const { critical, problems } = await readCritical(fs, {
      devices: noDevices,
      cmdlineParams: new Map(),
    });
    expect(problems.filter((p) => p.source !== '/proc/net/route')).toEqual([]);
    expect(critical.map((c) => c.address).sort()).toEqual(['0000:3d:00.0', '0000:5e:00.0']);
  });

  it('follows dm slaves down to every disk under an LVM mirror', async () => {
    const fs = await tree(
      {
        'proc/self/mountinfo': '29 1 253:0 / / rw - xfs /dev/mapper/vg-root rw\n',
        [`sys/${NVME}/x`]: '',
      },
      {
        'sys/dev/block/253:0': '../../devices/virtual/block/dm-0',
        'sys/devices/virtual/block/dm-0/slaves/nvme0n1': `../../../../${NVME}`,
        'sys/devices/virtual/block/dm-0/slaves/sda': `../../../../${SATA}`,
      },
    );
    const { critical } = await readCritical(fs, { devices: noDevices, cmdlineParams: new Map() });
    expect(critical.map((c) => c.address).sort()).toEqual(['0000:00:17.0', '0000:3d:00.0']);
    expect(critical[0]?.detail).toBe('/ on /dev/mapper/vg-root');
  });

  it('resolves /dev/root through root= on the command line', async () => {
    const fs = await tree(
      { 'proc/mounts': '/dev/root / ext4 rw 0 0\n' },
      { 'sys/class/block/sda': `../../${SATA}`, 'sys/class/block/nvme0n1': `../../${NVME}` },
    );
    const cmdlineParams = new Map(parseCmdline('ro root=/dev/sda quiet'));
    const { critical } = await readCritical(fs, { devices: noDevices, cmdlineParams });
    expect(critical).toEqual([
      { address: '0000:00:17.0', kind: 'root-disk', detail: '/ on /dev/root (sda)' },
    ]);
  });

  it('reports a problem instead of guessing when /dev/root is ambiguous', async () => {
    const fs = await tree(
      { 'proc/mounts': '/dev/root / ext4 rw 0 0\n' },
      { 'sys/class/block/sda': `../../${SATA}`, 'sys/class/block/nvme0n1': `../../${NVME}` },
    );
    const result = await readCritical(fs, { devices: noDevices, cmdlineParams: new Map() });
    expect(result.critical).toEqual([]);
    expect(result.problems[0]?.message).toContain('root disk not identified');
  });
});

describe('default route', () => {
  it('follows a VLAN on a bond down to its PCI NICs, ignoring reject routes', async () => {
    const fs = await tree(
      {
        'proc/net/route': `${V4_HEADER}bond0.7\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n`,
        'proc/net/ipv6_route':
          '00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n',
        [`sys/${NIC}/x`]: '',
      },
      {
        'sys/class/net/bond0.7': '../../devices/virtual/net/bond0.7',
        'sys/devices/virtual/net/bond0.7/lower_bond0': '../bond0',
        'sys/class/net/bond0': '../../devices/virtual/net/bond0',
        'sys/devices/virtual/net/bond0/lower_eno1': `../../../../${NIC}`,
        'sys/class/net/eno1': `../../${NIC}`,
        [`sys/${NIC}/device`]: '../../../0000:02:00.0',
      },
    );
    const { critical } = await readCritical(fs, { devices: noDevices, cmdlineParams: new Map() });
    expect(critical).toEqual([
      {
        address: '0000:02:00.0',
        kind: 'default-route',
        detail: 'default route via bond0.7 (eno1)',
      },
    ]);
  });
});

describe('boot VGA', () => {
  it('is critical only while fbcon is bound', async () => {
    const devices = [
      { address: '0000:01:00.0', bootVga: true },
      { address: '0000:02:00.0', bootVga: false },
    ];
    let fs = await tree(
      {
        'sys/devices/virtual/vtconsole/vtcon1/bind': '1\n',
        'sys/devices/virtual/vtconsole/vtcon1/name': '(M) frame buffer device\n',
      },
      { 'sys/class/vtconsole/vtcon1': '../../devices/virtual/vtconsole/vtcon1' },
    );
    expect((await readCritical(fs, { devices, cmdlineParams: new Map() })).critical).toContainEqual(
      {
        address: '0000:01:00.0',
        kind: 'boot-vga-console',
        detail: 'boot VGA with the fbcon console bound',
      },
    );
    await rm(root, { recursive: true, force: true });
    fs = await tree(
      {
        'sys/class/vtconsole/vtcon0/bind': '1\n',
        'sys/class/vtconsole/vtcon0/name': '(S) dummy device\n',
      },
      {},
    );
    const critical = (await readCritical(fs, { devices, cmdlineParams: new Map() })).critical;
    expect(critical.filter((c) => c.kind === 'boot-vga-console')).toEqual([]);
  });
});

describe('parseCmdline', () => {
  it('stops at -- and keeps quoted values whole', () => {
    expect(parseCmdline('intel_iommu=on foo="a b" -- init=/bin/x')).toEqual([
      ['intel_iommu', 'on'],
      ['foo', 'a b'],
    ]);
  });
});
