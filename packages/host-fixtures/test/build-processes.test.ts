// Processes and `enable` in generated host trees: what the agent's holder scan reads.
import { mkdtemp, readdir, readFile, readlink, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildHostTree, type HostSpec, scenario } from '../src/index';

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function build(spec: HostSpec): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), 'build-processes-')));
  tempDirs.push(dir);
  await buildHostTree(dir, spec);
  return dir;
}

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const NIC = '0000:65:00.0';
const enable = (root: string, address: string) =>
  readFile(path.join(root, 'sys/bus/pci/devices', address, 'enable'), 'utf8');

describe('host trees: processes and enable', () => {
  it('vm-running: enable is 1 on host drivers and on held vfio devices only', async () => {
    const root = await build(scenario('vm-running'));
    expect(await enable(root, NIC)).toBe('1\n');
    expect(await enable(root, GPU)).toBe('1\n');
    expect(await enable(root, '0000:65:00.1')).toBe('1\n');
    // The ASPEED bridge has no driver.
    expect(await enable(root, '0000:01:00.0')).toBe('0\n');
    const unheld = await build(scenario('vfio-bound'));
    expect(await enable(unheld, GPU)).toBe('0\n');
  });

  it('writes fd links verbatim, cmdline NUL-separated, and the device cdev', async () => {
    const base = scenario('vfio-bound');
    const root = await build({
      ...base,
      vfioDeviceCdev: true,
      devices: base.devices.map((d) => (d.address === AUDIO ? { ...d, enable: false } : d)),
      processes: [
        {
          pid: 77,
          comm: 'crosvm',
          cmdline: ['crosvm', 'run', '--name', 'a b'],
          fds: [
            { cdev: GPU },
            { group: 21 },
            { container: true },
            { device: AUDIO },
            { target: 'socket:[9]' },
          ],
        },
      ],
    });
    const fd = path.join(root, 'proc/77/fd');
    expect((await readdir(fd)).sort()).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    expect(
      await Promise.all(['3', '4', '5', '6', '7'].map((n) => readlink(path.join(fd, n)))),
    ).toEqual([
      '/dev/vfio/devices/vfio0',
      '/dev/vfio/21',
      '/dev/vfio/vfio',
      'anon_inode:[vfio-device]',
      'socket:[9]',
    ]);
    expect(await readFile(path.join(root, 'proc/77/cmdline'), 'utf8')).toBe(
      'crosvm\0run\0--name\0a b\0',
    );
    expect(await readFile(path.join(root, 'proc/77/comm'), 'utf8')).toBe('crosvm\n');
    expect(await readdir(path.join(root, 'sys/bus/pci/devices', AUDIO, 'vfio-dev'))).toEqual([
      'vfio1',
    ]);
    expect(await enable(root, GPU)).toBe('1\n');
    // An explicit enable wins over what the processes say.
    expect(await enable(root, AUDIO)).toBe('0\n');
  });

  it.each([
    [{ pid: 5, fds: [{ group: 99 }] }, 'a group no device is in'],
    [{ pid: 5, fds: [{ device: NIC }] }, 'not a device on a vfio driver'],
    [{ pid: 5, fds: [{ cdev: GPU }] }, 'has no vfioDeviceCdev'],
    [{ pid: 0, fds: [] }, 'pid is not positive'],
  ])('rejects %j', async (process, message) => {
    const spec = { ...scenario('vfio-bound'), processes: [process] };
    await expect(build(spec)).rejects.toThrow(message);
  });

  it('rejects a pid given twice', async () => {
    const spec = {
      ...scenario('vfio-bound'),
      processes: [
        { pid: 5, fds: [] },
        { pid: 5, fds: [] },
      ],
    };
    await expect(build(spec)).rejects.toThrow('duplicate process pid 5');
  });
});
