// HostFs against real files and links in a temp dir: resolution must stay inside the root
// whatever the links say, and absent files must read as states (null, []), not throw.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';

let root: string;
let outside: string;
let fs: HostFs;

beforeAll(async () => {
  outside = await mkdtemp(path.join(tmpdir(), 'hostfs-outside-'));
  root = await mkdtemp(path.join(tmpdir(), 'hostfs-root-'));
  await writeFile(path.join(outside, 'secret'), 'outside\n');
  await mkdir(path.join(root, 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0'), {
    recursive: true,
  });
  await writeFile(
    path.join(root, 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/vendor'),
    '0x10de\n',
  );
  await mkdir(path.join(root, 'sys/bus/pci/devices'), { recursive: true });
  // Relative link, the way sysfs writes them.
  await symlink(
    '../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0',
    path.join(root, 'sys/bus/pci/devices/0000:01:00.0'),
  );
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc/hostname'), 'inside\n');
  // Absolute target: must mean <root>/etc/hostname, not the machine's.
  await symlink('/etc/hostname', path.join(root, 'abs-link'));
  // Tries to climb out of the root; must stop at it.
  await symlink(`../../../../../../../..${outside}/secret`, path.join(root, 'escape'));
  await symlink(outside, path.join(root, 'abs-escape'));
  await symlink('loop-b', path.join(root, 'loop-a'));
  await symlink('loop-a', path.join(root, 'loop-b'));
  await symlink('.', path.join(root, 'self'));
  await mkdir(path.join(root, 'sys/block'), { recursive: true });
  await symlink('../devices/gone/0000:02:00.0/block/sda', path.join(root, 'sys/block/sda'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

describe('HostFs.resolve', () => {
  beforeAll(() => {
    fs = new HostFs(root);
  });

  it('follows relative links component by component inside the root', async () => {
    expect(await fs.resolve('/sys/bus/pci/devices/0000:01:00.0/vendor')).toBe(
      '/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/vendor',
    );
    expect(await fs.readAttr('/sys/bus/pci/devices/0000:01:00.0/vendor')).toBe('0x10de');
  });

  it('re-roots absolute link targets', async () => {
    expect(await fs.resolve('/abs-link')).toBe('/etc/hostname');
    expect(await fs.readText('/abs-link')).toBe('inside\n');
    expect(await fs.resolve('/abs-escape/secret')).toBe(`${outside}/secret`);
    expect(await fs.readText('/abs-escape/secret')).toBeNull();
  });

  it('clamps ../../.. at the root', async () => {
    expect(await fs.resolve('/../../../etc/hostname')).toBe('/etc/hostname');
    expect(await fs.resolve('/escape')).toBe(`${outside}/secret`);
    expect(await fs.readText('/escape')).toBeNull();
    expect(await fs.readText('/../../../../etc/hostname')).toBe('inside\n');
  });

  it('ends symlink cycles instead of hanging', async () => {
    expect(await fs.resolve('/loop-a')).toBeNull();
    expect(await fs.readText('/loop-a/x')).toBeNull();
    expect(await fs.listDir('/loop-b')).toEqual([]);
    // A link to "." is not a cycle by itself: self/self/etc is just etc.
    expect(await fs.resolve('/self/self/self/etc/hostname')).toBe('/etc/hostname');
  });

  it('resolves dangling links lexically, so their text still names the device', async () => {
    expect(await fs.resolve('/sys/block/sda')).toBe('/sys/devices/gone/0000:02:00.0/block/sda');
    expect(await fs.exists('/sys/block/sda')).toBe(true);
    expect(await fs.readLink('/sys/block/sda')).toBe('../devices/gone/0000:02:00.0/block/sda');
  });
});

describe('HostFs reads', () => {
  it('treats absent files and directories as states', async () => {
    expect(await fs.readText('/proc/cmdline')).toBeNull();
    expect(await fs.readText('/etc/hostname/x')).toBeNull(); // ENOTDIR
    expect(await fs.readText('/etc')).toBeNull(); // a directory
    expect(await fs.listDir('/sys/kernel/iommu_groups')).toEqual([]);
    expect(await fs.readLink('/etc/hostname')).toBeNull();
    expect(await fs.exists('/nope')).toBe(false);
  });

  it('lists directories sorted, through links', async () => {
    expect(await fs.listDir('/sys/bus/pci/devices')).toEqual(['0000:01:00.0']);
    expect(await fs.listDir('/sys/bus/pci/devices/0000:01:00.0')).toEqual(['vendor']);
    expect(await fs.entryType('/sys/bus/pci/devices/0000:01:00.0')).toBe('symlink');
    expect(await fs.entryType('/sys/bus/pci/devices/0000:01:00.0/vendor')).toBe('file');
  });

  it('reads the real root without a prefix', async () => {
    const real = new HostFs('/');
    expect(await real.readText('/proc/self/status')).toMatch(/^Name:/);
    expect(await real.readText('/definitely/not/here')).toBeNull();
  });
});
