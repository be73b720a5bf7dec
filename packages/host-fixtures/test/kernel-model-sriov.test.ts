// sriov_numvfs writes in the kernel model, as iov.c's sriov_numvfs_store answers them and as the
// shared notes measured VF creation and removal on a real 6.1 kernel.
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readFile, readlink, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type KernelErrno, KernelIoError } from '@vfio-fleet/core';
import { afterEach, describe, expect, it } from 'vitest';
import { buildScenario, KernelModel } from '../src/index';
import { parseU16 } from '../src/kernel-model-sriov';
import { catFile, isFifo, killReaders, until } from './blocked-reads';

const tempDirs: string[] = [];
afterEach(async () => {
  killReaders();
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tree(): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), 'kernel-sriov-')));
  tempDirs.push(dir);
  await buildScenario(dir, 'mlx5-vf');
  return dir;
}

const PF = '0000:41:00.0';
const PF1 = '0000:41:00.1';
const VFS = ['0000:41:00.2', '0000:41:00.3'];
const QEMU = { pid: 4242, comm: 'qemu-system-x86', cmdline: ['qemu-system-x86_64'] };
const dev = (address: string) => `sys/bus/pci/devices/${address}`;
const numvfs = (address: string) => `/${dev(address)}/sriov_numvfs`;
const read = (root: string, rel: string) => readFile(path.join(root, rel), 'utf8');
const exists = (root: string, rel: string) => existsSync(path.join(root, rel));
async function driverOf(root: string, address: string): Promise<string | null> {
  try {
    return path.basename(await readlink(path.join(root, dev(address), 'driver')));
  } catch {
    return null;
  }
}
async function groupOf(root: string, address: string): Promise<number | null> {
  try {
    return Number(path.basename(await readlink(path.join(root, dev(address), 'iommu_group'))));
  } catch {
    return null;
  }
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

/** A VF moved to vfio-pci and held by a VM. */
async function heldVf(model: KernelModel, address: string): Promise<() => Promise<void>> {
  await model.modprobe('vfio_pci');
  await model.write(`/${dev(address)}/driver_override`, 'vfio-pci');
  await model.write('/sys/bus/pci/drivers/mlx5_core/unbind', address);
  await model.write('/sys/bus/pci/drivers_probe', address);
  return model.holdDevice(address, QEMU);
}

describe('KernelModel: sriov_numvfs', () => {
  it('parses the value as kstrtou16 with base 0 does', () => {
    expect(parseU16('2')).toBe(2);
    expect(parseU16('2\n')).toBe(2);
    expect(parseU16('+3')).toBe(3);
    expect(parseU16('0x10')).toBe(16);
    expect(parseU16('010')).toBe(8);
    expect(parseU16('0')).toBe(0);
    expect(parseU16('65535')).toBe(65535);
    for (const junk of ['65536', '-1', 'two', '2 ', '0x', '08', ' 2', '2\n\n', '1.5']) {
      expect(parseU16(junk), junk).toBeNull();
    }
  });

  it('answers as sriov_numvfs_store: EINVAL, ERANGE, a no-op, EBUSY, ENOENT', async () => {
    const root = await tree();
    const model = new KernelModel(root);
    expect(await errnoOf(model.write(numvfs(PF), 'two'))).toBe('EINVAL');
    expect(await errnoOf(model.write(numvfs(PF), '70000'))).toBe('EINVAL');
    expect(await errnoOf(model.write(numvfs(PF), '9'))).toBe('ERANGE');
    // The current count changes nothing; another non-zero one must go through 0.
    await model.write(numvfs(PF), '2\n');
    expect(await errnoOf(model.write(numvfs(PF), '3'))).toBe('EBUSY');
    expect(await read(root, `${dev(PF)}/sriov_numvfs`)).toBe('2\n');
    for (const vf of VFS) expect(await driverOf(root, vf)).toBe('mlx5_core');
    // A PF without a driver cannot configure SR-IOV; writing its current count still succeeds.
    await model.write('/sys/bus/pci/drivers/mlx5_core/unbind', PF1);
    expect(await errnoOf(model.write(numvfs(PF1), '1'))).toBe('ENOENT');
    await model.write(numvfs(PF1), '0');
    // Nor a driver without sriov_configure (vfio-pci without enable_sriov).
    await model.modprobe('vfio_pci');
    await model.write(`/${dev(PF1)}/driver_override`, 'vfio-pci');
    await model.write('/sys/bus/pci/drivers_probe', PF1);
    expect(await driverOf(root, PF1)).toBe('vfio-pci');
    expect(await errnoOf(model.write(numvfs(PF1), '1'))).toBe('ENOENT');
    expect(exists(root, `${dev(PF1)}/virtfn0`)).toBe(false);
  });

  it('0 removes the VFs; N creates them again as the kernel adds them, probed by autoprobe', async () => {
    const root = await tree();
    const model = new KernelModel(root);
    const groups = await Promise.all(VFS.map((vf) => groupOf(root, vf)));
    await model.write(numvfs(PF), '0');
    expect(await read(root, `${dev(PF)}/sriov_numvfs`)).toBe('0\n');
    for (const [i, vf] of VFS.entries()) {
      expect(exists(root, dev(vf))).toBe(false);
      expect(exists(root, `${dev(PF)}/virtfn${i}`)).toBe(false);
      expect(exists(root, `sys/kernel/iommu_groups/${groups[i]}`)).toBe(false);
      expect(exists(root, `sys/bus/pci/drivers/mlx5_core/${vf}`)).toBe(false);
    }
    expect(await read(root, `${dev(PF)}/sriov_vf_device`)).toBe('101e\n');

    await model.write(numvfs(PF), '2');
    expect(await read(root, `${dev(PF)}/sriov_numvfs`)).toBe('2\n');
    const seen = new Set<number | null>();
    for (const [i, vf] of VFS.entries()) {
      const dir = await realpath(path.join(root, dev(vf)));
      // Beside its PF (offset 2, stride 1), linked both ways.
      expect(path.dirname(dir)).toBe(path.dirname(await realpath(path.join(root, dev(PF)))));
      expect(await realpath(path.join(root, dev(PF), `virtfn${i}`))).toBe(dir);
      expect(path.basename(await readlink(path.join(dir, 'physfn')))).toBe(PF);
      expect(await read(root, `${dev(vf)}/device`)).toBe('0x101e\n');
      expect(await read(root, `${dev(vf)}/modalias`)).toBe(
        'pci:v000015B3d0000101Esv000015B3sd00000083bc02sc00i00\n',
      );
      expect(await read(root, `${dev(vf)}/reset_method`)).toBe('flr\n');
      expect(await read(root, `${dev(vf)}/driver_override`)).toBe('(null)\n');
      // Each in a group of its own, the lowest ids free (iommu_group_alloc's ida).
      const group = await groupOf(root, vf);
      expect(group).not.toBeNull();
      expect(group).not.toBe(await groupOf(root, PF));
      expect(seen.has(group)).toBe(false);
      seen.add(group);
      expect(exists(root, `sys/kernel/iommu_groups/${group}/devices/${vf}`)).toBe(true);
      // sriov_drivers_autoprobe is 1: the host driver took it at once.
      expect(await driverOf(root, vf)).toBe('mlx5_core');
      expect(exists(root, `sys/bus/pci/drivers/mlx5_core/${vf}`)).toBe(true);
    }
  });

  it('with sriov_drivers_autoprobe 0 the VFs stay unbound; driver_override still binds one', async () => {
    const root = await tree();
    const model = new KernelModel(root);
    await model.write(numvfs(PF), '0');
    await model.write(`/${dev(PF)}/sriov_drivers_autoprobe`, '0');
    await model.write(numvfs(PF), '2');
    for (const vf of VFS) expect(await driverOf(root, vf)).toBeNull();
    await model.write('/sys/bus/pci/drivers_probe', VFS[0] ?? '');
    expect(await driverOf(root, VFS[0] ?? '')).toBeNull();
    await model.modprobe('vfio_pci');
    await model.write(`/${dev(VFS[0] ?? '')}/driver_override`, 'vfio-pci');
    await model.write('/sys/bus/pci/drivers_probe', VFS[0] ?? '');
    expect(await driverOf(root, VFS[0] ?? '')).toBe('vfio-pci');
    expect(exists(root, `dev/vfio/${await groupOf(root, VFS[0] ?? '')}`)).toBe(true);
  });

  it('0 with a held VF blocks until the holder lets go; the PF and VF lock-taking reads hang meanwhile', async () => {
    const root = await tree();
    const model = new KernelModel(root);
    const [vf0 = '', vf1 = ''] = VFS;
    const release = await heldVf(model, vf1);
    const write = model.write(numvfs(PF), '0');
    await until(() => isFifo(root, `${dev(vf1)}/driver_override`));
    expect(await settledSoon(write)).toBe(false);
    // The VF before it is gone already; the held one has lost its driver link, not its directory.
    expect(exists(root, dev(vf0))).toBe(false);
    expect(exists(root, dev(vf1))).toBe(true);
    expect(await driverOf(root, vf1)).toBeNull();
    // Another process's reads of driver_override and sriov_numvfs wait for the device lock.
    const pfCount = catFile(root, `${dev(PF)}/sriov_numvfs`);
    const pfOverride = catFile(root, `${dev(PF)}/driver_override`);
    const vfOverride = catFile(root, `${dev(vf1)}/driver_override`);
    expect(await settledSoon(Promise.race([pfCount, pfOverride, vfOverride]))).toBe(false);
    expect(await isFifo(root, `${dev(PF)}/sriov_numvfs`)).toBe(true);
    // sriov_totalvfs takes no lock.
    expect(await read(root, `${dev(PF)}/sriov_totalvfs`)).toBe('8\n');
    // Other model operations on the PF wait too.
    const override = model.write(`/${dev(PF)}/driver_override`, 'mlx5_core');
    expect(await settledSoon(override)).toBe(false);

    await release();
    await write;
    await override;
    expect(await pfCount).toBe('0\n');
    expect(await pfOverride).toBe('(null)\n');
    expect(await vfOverride).toBe('vfio-pci\n');
    expect(exists(root, dev(vf1))).toBe(false);
    expect((await lstat(path.join(root, dev(PF), 'sriov_numvfs'))).isFile()).toBe(true);
    expect(await read(root, `${dev(PF)}/sriov_numvfs`)).toBe('0\n');
    expect(await read(root, `${dev(PF)}/driver_override`)).toBe('mlx5_core\n');
  });

  it("the PF's driver leaving with a held VF blocks the same way, its driver link gone at once", async () => {
    const root = await tree();
    const model = new KernelModel(root);
    const [vf0 = '', vf1 = ''] = VFS;
    const release = await heldVf(model, vf0);
    const unbind = model.write('/sys/bus/pci/drivers/mlx5_core/unbind', PF);
    await until(() => isFifo(root, `${dev(PF)}/sriov_numvfs`));
    expect(await settledSoon(unbind)).toBe(false);
    expect(await driverOf(root, PF)).toBeNull();
    const count = catFile(root, `${dev(PF)}/sriov_numvfs`);
    expect(await settledSoon(count)).toBe(false);
    await release();
    await unbind;
    expect(await count).toBe('0\n');
    for (const vf of [vf0, vf1]) expect(exists(root, dev(vf))).toBe(false);
    expect(await read(root, `${dev(PF)}/sriov_numvfs`)).toBe('0\n');
    expect(exists(root, 'sys/class/net/enp65s0f0np0')).toBe(false);
  });
});
