// SysfsKernelIo on a temp tree: what it writes, how open/write errors come back as KernelIoError,
// that each call is exactly one write(2), and that nothing outside /sys/ (or a planted link out of
// it) is ever written. modprobe runs a stand-in script, never the real one.
import { constants } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { type KernelErrno, KernelIoError } from '@vfio-fleet/core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SysfsKernelIo } from '../src/kernel/sysfs-kernel-io';
import { runWriterChild } from '../src/kernel/writer-child';
import { bundleWriter as writer } from './helpers/writer-command';

let root: string;
let outside: string;
const DEVICE = 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0';

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'sysfs-io-root-'));
  outside = await mkdtemp(path.join(tmpdir(), 'sysfs-io-outside-'));
  await mkdir(path.join(root, DEVICE), { recursive: true });
  await writeFile(path.join(root, DEVICE, 'driver_override'), '(null)\n');
  await mkdir(path.join(root, 'sys/bus/pci/devices'), { recursive: true });
  await symlink(
    '../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0',
    path.join(root, 'sys/bus/pci/devices/0000:01:00.0'),
  );
  await mkdir(path.join(root, 'sys/bus/pci/drivers/nvidia'), { recursive: true });
  await writeFile(path.join(root, 'sys/bus/pci/drivers/nvidia/unbind'), '');
  await writeFile(path.join(root, 'sys/bus/pci/drivers_probe'), '');
  await writeFile(path.join(outside, 'secret'), 'untouched\n');
  // A planted link out of /sys/: absolute (restarts at the root) and relative.
  await symlink('/etc/shadow', path.join(root, DEVICE, 'evil_abs'));
  await symlink(path.join(outside, 'secret'), path.join(root, DEVICE, 'evil_host'));
  await mkdir(path.join(root, 'etc'), { recursive: true });
  await writeFile(path.join(root, 'etc/shadow'), 'root:x\n');
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await rm(outside, { recursive: true, force: true });
});

afterEach(() => {
  vi.restoreAllMocks();
});

/** FileHandle.prototype (node:fs/promises does not export the class), to spy on its write. */
async function fileHandlePrototype(): Promise<object> {
  const probe = await open(path.join(root, 'sys/bus/pci/drivers_probe'), 'r');
  const proto: unknown = Object.getPrototypeOf(probe);
  await probe.close();
  if (typeof proto !== 'object' || proto === null) throw new Error('no FileHandle');
  return proto;
}

async function errnoOf(promise: Promise<void>): Promise<KernelErrno> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KernelIoError) return error.errno;
    throw error;
  }
  throw new Error('expected a KernelIoError');
}

describe('SysfsKernelIo.write', () => {
  it('writes the value through the bus links, replacing the old content', async () => {
    const io = new SysfsKernelIo(root, { writer });
    await io.write('/sys/bus/pci/devices/0000:01:00.0/driver_override', 'vfio-pci');
    expect(await readFile(path.join(root, DEVICE, 'driver_override'), 'utf8')).toBe('vfio-pci');
    await io.write('/sys/bus/pci/devices/0000:01:00.0/driver_override', '\n');
    expect(await readFile(path.join(root, DEVICE, 'driver_override'), 'utf8')).toBe('\n');
    await io.write('/sys/bus/pci/drivers/nvidia/unbind', '0000:01:00.0');
    expect(await readFile(path.join(root, 'sys/bus/pci/drivers/nvidia/unbind'), 'utf8')).toBe(
      '0000:01:00.0',
    );
  });

  it('fails with ENOENT on a missing attribute and creates nothing', async () => {
    const io = new SysfsKernelIo(root, { writer });
    const missing = '/sys/bus/pci/drivers/vfio-pci/bind';
    const error = await io.write(missing, '0000:01:00.0').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KernelIoError);
    expect(error).toMatchObject({ errno: 'ENOENT', target: missing });
    expect(await errnoOf(io.write('/sys/bus/pci/devices/0000:01:00.0/nope', '1'))).toBe('ENOENT');
    await expect(readFile(path.join(root, 'sys/bus/pci/drivers/vfio-pci/bind'))).rejects.toThrow();
  });

  it('maps other errno codes, and unknown ones to EUNKNOWN', async () => {
    const io = new SysfsKernelIo(root, { writer });
    // A directory cannot be opened for writing: EISDIR is not a driver-core errno.
    expect(await errnoOf(io.write('/sys/bus/pci/drivers/nvidia', 'x'))).toBe('EUNKNOWN');
    const readOnly = path.join(root, DEVICE, 'vendor');
    await writeFile(readOnly, '0x10de\n');
    await chmod(readOnly, 0o444);
    // Root ignores mode bits on a plain file system; the check only holds for other users.
    if (process.getuid?.() !== 0) {
      expect(await errnoOf(io.write(`/sys/bus/pci/devices/0000:01:00.0/vendor`, '1'))).toBe(
        'EACCES',
      );
    }
  });

  it('names a read-only sysfs EROFS and says which unit options fix it', async () => {
    // What the kernel answers a write to a file of a read-only mount (measured in kernel-test's
    // systemd part, where the sandbox without ReadWritePaths= makes /sys read-only), as the
    // writer child reports it.
    const answersErofs = `
      const rl = require('node:readline').createInterface({ input: process.stdin });
      console.log(JSON.stringify({ kind: 'ready' }));
      rl.on('line', (line) => console.log(JSON.stringify({ kind: 'error', id: JSON.parse(line).id,
        code: 'EROFS', message: 'EROFS: read-only file system, write' })));`;
    const io = new SysfsKernelIo(root, {
      writer: { command: process.execPath, args: ['-e', answersErofs] },
    });
    const error = await io
      .write('/sys/bus/pci/devices/0000:01:00.0/driver_override', 'vfio-pci')
      .catch((e: unknown) => e);
    io.close();
    expect(error).toBeInstanceOf(KernelIoError);
    expect(error).toMatchObject({ errno: 'EROFS' });
    expect(String((error as Error).message)).toMatch(
      /ReadWritePaths=\/sys\/bus\/pci \/sys\/devices/,
    );
  });

  it('issues exactly one write per call, with the whole value', async () => {
    // The writer child's code, run in this process so its write(2)s can be counted.
    const handleProto = await fileHandlePrototype();
    const write = vi.spyOn(handleProto as { write: () => unknown }, 'write');
    const value = `0000:01:00.0${' '.repeat(5000)}`;
    const input = new PassThrough();
    const output = new PassThrough();
    const file = path.join(root, 'sys/bus/pci/drivers_probe');
    input.end(
      `${JSON.stringify({ id: 1, file, flags: constants.O_WRONLY | constants.O_TRUNC, value })}\n`,
    );
    await runWriterChild(input, output);
    expect(write).toHaveBeenCalledTimes(1);
    expect(String(output.read())).toContain('"kind":"done","id":1,"bytesWritten":5012');
    expect(await readFile(file, 'utf8')).toBe(value);
  });

  it('writes through the writer child too', async () => {
    const io = new SysfsKernelIo(root, { writer });
    const value = `0000:01:00.0${' '.repeat(5000)}`;
    await io.write('/sys/bus/pci/drivers_probe', value);
    io.close();
    expect(await readFile(path.join(root, 'sys/bus/pci/drivers_probe'), 'utf8')).toBe(value);
  });

  it.each([
    '/etc/passwd',
    'sys/bus/pci/drivers_probe',
    '/sys/../etc/passwd',
    '/sys/bus/pci//drivers_probe',
    '/sys/bus/pci/./drivers_probe',
    '/sys/',
    '/sys/bus/pci/drivers_probe/',
    '/sysfs/x',
    '/sys/bus/pci/drivers_probe\0',
  ])('refuses %j without touching the file system', async (bad) => {
    const io = new SysfsKernelIo(root, { writer });
    expect(await errnoOf(io.write(bad, '1'))).toBe('EINVAL');
  });

  it('refuses to follow a link out of /sys/ under a non-/ root', async () => {
    const io = new SysfsKernelIo(root, { writer });
    expect(await errnoOf(io.write(`/sys/bus/pci/devices/0000:01:00.0/evil_abs`, 'x'))).toBe(
      'EINVAL',
    );
    expect(await errnoOf(io.write(`/sys/bus/pci/devices/0000:01:00.0/evil_host`, 'x'))).toBe(
      'EINVAL',
    );
    expect(await readFile(path.join(root, 'etc/shadow'), 'utf8')).toBe('root:x\n');
    expect(await readFile(path.join(outside, 'secret'), 'utf8')).toBe('untouched\n');
  });
});

describe('SysfsKernelIo.modprobe', () => {
  async function fakeModprobe(body: string): Promise<{ script: string; log: string }> {
    const dir = await mkdtemp(path.join(tmpdir(), 'fake-modprobe-'));
    const log = path.join(dir, 'args');
    const script = path.join(dir, 'modprobe');
    await writeFile(script, `#!/bin/sh\nprintf '%s\\n' "$@" > '${log}'\n${body}\n`);
    await chmod(script, 0o755);
    return { script, log };
  }

  it('runs modprobe with the module as its only argument on the live root', async () => {
    const { script, log } = await fakeModprobe('exit 0');
    await new SysfsKernelIo('/', { modprobePath: script }).modprobe('vfio_pci');
    expect(await readFile(log, 'utf8')).toBe('vfio_pci\n');
  });

  it('maps a failure to the errno in its stderr, keeping the message', async () => {
    const { script } = await fakeModprobe(
      "echo 'modprobe: FATAL: Module nope not found in directory /lib/modules/6.12.0' >&2; exit 1",
    );
    const error = await new SysfsKernelIo('/', { modprobePath: script })
      .modprobe('nope')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({
      errno: 'ENOENT',
      target: 'modprobe nope',
      message: 'modprobe: FATAL: Module nope not found in directory /lib/modules/6.12.0',
    });
    const { script: busy } = await fakeModprobe(
      'echo "modprobe: ERROR: could not insert \'vfio_pci\': Device or resource busy" >&2; exit 1',
    );
    expect(await errnoOf(new SysfsKernelIo('/', { modprobePath: busy }).modprobe('vfio_pci'))).toBe(
      'EBUSY',
    );
  });

  it('gives up on a modprobe that hangs', async () => {
    const { script } = await fakeModprobe('sleep 5');
    const io = new SysfsKernelIo('/', { modprobePath: script, modprobeTimeoutMs: 100 });
    expect(await errnoOf(io.modprobe('vfio_pci'))).toBe('ETIMEDOUT');
  });

  it('refuses a non-/ root with EPERM and bad names with EINVAL, running nothing', async () => {
    const { script, log } = await fakeModprobe('exit 0');
    const error = await new SysfsKernelIo(root, { modprobePath: script })
      .modprobe('vfio_pci')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ errno: 'EPERM' });
    expect(String(error)).toMatch(/modprobe needs the live host/);
    const live = new SysfsKernelIo('/', { modprobePath: script });
    // `-r` has only name characters but would reach modprobe as an option.
    for (const bad of ['', '-r', 'vfio_pci; reboot', 'a'.repeat(56), '../x', 'vfio pci']) {
      expect(await errnoOf(live.modprobe(bad))).toBe('EINVAL');
    }
    await expect(readFile(log)).rejects.toThrow();
  });

  it('reports a missing modprobe binary', async () => {
    const io = new SysfsKernelIo('/', { modprobePath: path.join(outside, 'no-modprobe') });
    expect(await errnoOf(io.modprobe('vfio_pci'))).toBe('ENOENT');
  });
});
