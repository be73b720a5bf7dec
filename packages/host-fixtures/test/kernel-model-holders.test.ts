// Users of vfio devices in the kernel model, as the shared notes measured them on a real 6.1
// kernel: `enable` follows the device fd, /proc shows the holder, and an unbind of a held device
// blocks (its `driver` link already gone) until the holder lets go.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { KernelIoError } from '@vfio-fleet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { buildScenario, KernelModel, type ScenarioName } from '../src/index';
import { catFile, isFifo, killReaders, until } from './blocked-reads';

const tempDirs: string[] = [];
afterEach(async () => {
  killReaders();
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tree(name: ScenarioName): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), 'kernel-holders-')));
  tempDirs.push(dir);
  await buildScenario(dir, name);
  return dir;
}

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const NIC = '0000:65:00.0';
const QEMU = {
  pid: 4242,
  comm: 'qemu-system-x86',
  cmdline: ['qemu-system-x86_64', '-name', 'guest=vm1'],
};
const dev = (address: string) => `sys/bus/pci/devices/${address}`;
const enable = (root: string, address: string) =>
  readFile(path.join(root, dev(address), 'enable'), 'utf8');
async function driverOf(root: string, address: string): Promise<string | null> {
  try {
    return path.basename(await readlink(path.join(root, dev(address), 'driver')));
  } catch {
    return null;
  }
}

async function errnoOfWrite(promise: Promise<void>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KernelIoError) return error.errno;
    throw error;
  }
  throw new Error('expected a KernelIoError');
}

/** Whether `promise` has settled after the event loop has had a fair chance to settle it. */
async function settledSoon(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void promise.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise((r) => setTimeout(r, 100));
  return settled;
}

describe('KernelModel: holders of vfio devices', () => {
  it('a held device reads enable 1 and its holder shows in /proc; release undoes both', async () => {
    const root = await tree('vfio-bound');
    const model = new KernelModel(root);
    expect(await enable(root, GPU)).toBe('0\n');
    const release = await model.holdDevice(GPU, QEMU);
    expect(await enable(root, GPU)).toBe('1\n');
    expect(await enable(root, AUDIO)).toBe('0\n');
    const fds = path.join(root, 'proc/4242/fd');
    const targets = await Promise.all(['3', '4', '5'].map((fd) => readlink(path.join(fds, fd))));
    expect(targets).toEqual(['/dev/vfio/21', '/dev/vfio/vfio', 'anon_inode:[vfio-device]']);
    expect(await readFile(path.join(root, 'proc/4242/cmdline'), 'utf8')).toBe(
      'qemu-system-x86_64\0-name\0guest=vm1\0',
    );
    await release();
    expect(await enable(root, GPU)).toBe('0\n');
    expect(existsSync(path.join(root, 'proc/4242'))).toBe(false);
  });

  it('only a device on a vfio driver can be opened', async () => {
    const root = await tree('vfio-bound');
    await expect(new KernelModel(root).holdDevice(NIC, QEMU)).rejects.toThrow(/vfio driver/);
  });

  it('unbinding a held device blocks, with its driver link gone at once, until the holder exits', async () => {
    const root = await tree('vfio-bound');
    const model = new KernelModel(root);
    const release = await model.holdDevice(GPU, QEMU);
    const unbind = model.write('/sys/bus/pci/drivers/vfio-pci/unbind', GPU);
    expect(await settledSoon(unbind)).toBe(false);
    // The measured trap: sysfs already shows no driver while the write is still blocked.
    expect(await driverOf(root, GPU)).toBeNull();
    // Anything else done to that device waits behind it (the device lock)...
    const override = model.write(`/${dev(GPU)}/driver_override`, '\n');
    expect(await settledSoon(override)).toBe(false);
    // ...while other devices go on.
    await model.write(`/${dev(NIC)}/driver_override`, 'vfio-pci');
    await model.write('/sys/bus/pci/drivers/vfio-pci/unbind', AUDIO);
    expect(await driverOf(root, AUDIO)).toBeNull();

    await release();
    await unbind;
    await override;
    expect(await driverOf(root, GPU)).toBeNull();
    expect(await enable(root, GPU)).toBe('0\n');
    // The group's last vfio device left: its char device goes.
    expect(existsSync(path.join(root, 'dev/vfio/21'))).toBe(false);
  });

  it("while it is blocked, other processes' reads of its driver_override hang until it returns", async () => {
    const root = await tree('vfio-bound');
    const model = new KernelModel(root);
    const release = await model.holdDevice(GPU, QEMU);
    const unbind = model.write('/sys/bus/pci/drivers/vfio-pci/unbind', GPU);
    await until(() => isFifo(root, `${dev(GPU)}/driver_override`));
    const blocked = catFile(root, `${dev(GPU)}/driver_override`);
    expect(await settledSoon(blocked)).toBe(false);
    // Attributes whose show() takes no lock read as ever, and so do other devices'.
    expect(await catFile(root, `${dev(GPU)}/vendor`)).toBe('0x10de\n');
    expect(await catFile(root, `${dev(AUDIO)}/driver_override`)).toBe('vfio-pci\n');
    await release();
    await unbind;
    expect(await blocked).toBe('vfio-pci\n');
    expect(await isFifo(root, `${dev(GPU)}/driver_override`)).toBe(false);
    expect(await catFile(root, `${dev(GPU)}/driver_override`)).toBe('vfio-pci\n');
  });

  it('a host driver cannot bind another member of a held group (EBUSY) until the holder lets go', async () => {
    const root = await tree('dual-gpu');
    const model = new KernelModel(root);
    await model.modprobe('vfio_pci');
    for (const [address, driver] of [
      [GPU, 'nvidia'],
      [AUDIO, 'snd_hda_intel'],
    ] as const) {
      await model.write(`/${dev(address)}/driver_override`, 'vfio-pci');
      await model.write(`/sys/bus/pci/drivers/${driver}/unbind`, address);
      await model.write('/sys/bus/pci/drivers_probe', address);
    }
    const release = await model.holdDevice(GPU, QEMU);
    await model.write(`/${dev(AUDIO)}/driver_override`, '\n');
    await model.write('/sys/bus/pci/drivers/vfio-pci/unbind', AUDIO);
    await model.write('/sys/bus/pci/drivers_probe', AUDIO);
    expect(await driverOf(root, AUDIO)).toBeNull();
    expect(await errnoOfWrite(model.write('/sys/bus/pci/drivers/snd_hda_intel/bind', AUDIO))).toBe(
      'EBUSY',
    );
    await release();
    await model.write('/sys/bus/pci/drivers_probe', AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');
  });

  it('removing a held device blocks too, then the device is gone', async () => {
    const root = await tree('vfio-bound');
    const model = new KernelModel(root);
    const release = await model.holdDevice(AUDIO, QEMU);
    const remove = model.write(`/${dev(AUDIO)}/remove`, '1');
    expect(await settledSoon(remove)).toBe(false);
    expect(existsSync(path.join(root, dev(AUDIO)))).toBe(true);
    await release();
    await remove;
    expect(existsSync(path.join(root, dev(AUDIO)))).toBe(false);
  });

  it('a device held twice is free only when both let go', async () => {
    const root = await tree('vfio-bound');
    const model = new KernelModel(root);
    const first = await model.holdDevice(GPU, QEMU);
    const second = await model.holdDevice(GPU, { ...QEMU, pid: 5000 });
    const unbind = model.write('/sys/bus/pci/drivers/vfio-pci/unbind', GPU);
    await first();
    expect(await settledSoon(unbind)).toBe(false);
    expect(await enable(root, GPU)).toBe('1\n');
    await second();
    await unbind;
    expect(existsSync(path.join(root, 'proc/5000'))).toBe(false);
  });
});
