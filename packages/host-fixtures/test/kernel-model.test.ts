import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, realpath, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type KernelErrno, KernelIoError } from '@vfio-fleet/core';
import { afterEach, describe, expect, it } from 'vitest';
import {
  buildHostTree,
  buildScenario,
  hotplug,
  hotUnplug,
  isGroupViableInModel,
  KernelModel,
  type ScenarioName,
  scenario,
} from '../src/index';
import { NVIDIA_DKMS_LINES, SCENARIO_MODULES_ALIAS } from '../src/scenario-modules-alias';

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tree(name: ScenarioName, modulesAlias?: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), 'kernel-model-')));
  tempDirs.push(dir);
  await buildScenario(dir, name, modulesAlias === undefined ? {} : { modulesAlias });
  return dir;
}

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const dev = (address: string) => `sys/bus/pci/devices/${address}`;
const overridePath = (address: string) => `/sys/bus/pci/devices/${address}/driver_override`;
const unbindPath = (driver: string) => `/sys/bus/pci/drivers/${driver}/unbind`;
const bindPath = (driver: string) => `/sys/bus/pci/drivers/${driver}/bind`;
const PROBE = '/sys/bus/pci/drivers_probe';

const read = (root: string, rel: string) => readFile(path.join(root, rel), 'utf8');
const exists = (root: string, rel: string) => existsSync(path.join(root, rel));
async function driverOf(root: string, address: string): Promise<string | null> {
  try {
    return path.basename(await readlink(path.join(root, dev(address), 'driver')));
  } catch {
    return null;
  }
}

/** The errno a call rejects with; fails the test when it resolves or throws something else. */
async function errnoOf(promise: Promise<void>): Promise<KernelErrno> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof KernelIoError) return error.errno;
    throw error;
  }
  throw new Error('expected a KernelIoError');
}

/** A snapshot of every file and link under the root, to prove a write changed nothing. */
async function snapshot(root: string): Promise<string> {
  const { readdir, lstat } = await import('node:fs/promises');
  const lines: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const entry of (await readdir(path.join(root, rel))).sort()) {
      const child = rel === '' ? entry : `${rel}/${entry}`;
      const stat = await lstat(path.join(root, child));
      if (stat.isSymbolicLink())
        lines.push(`${child} -> ${await readlink(path.join(root, child))}`);
      else if (stat.isDirectory()) await walk(child);
      else lines.push(`${child} = ${await read(root, child)}`);
    }
  };
  await walk('');
  return lines.join('\n');
}

/** The plan's vfio direction for one device: override, unbind the current driver, probe. */
async function toVfio(kernel: KernelModel, root: string, address: string): Promise<void> {
  await kernel.write(overridePath(address), 'vfio-pci');
  const current = await driverOf(root, address);
  if (current !== null) await kernel.write(unbindPath(current), address);
  await kernel.write(PROBE, address);
}

async function toHost(kernel: KernelModel, address: string): Promise<void> {
  await kernel.write(overridePath(address), '\n');
  await kernel.write(unbindPath('vfio-pci'), address);
  await kernel.write(PROBE, address);
}

describe('KernelModel: the vfio round trip on dual-gpu', () => {
  it('moves the GPU and its audio function to vfio-pci; /dev/vfio/21 appears with the first', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    expect(exists(root, 'sys/bus/pci/drivers/vfio-pci')).toBe(false);

    await kernel.modprobe('vfio_pci');
    for (const module of ['vfio', 'vfio_pci_core', 'vfio_iommu_type1', 'irqbypass', 'vfio_pci']) {
      expect(exists(root, `sys/module/${module}`)).toBe(true);
    }
    expect(await readlink(path.join(root, 'sys/module/vfio_pci/drivers/pci:vfio-pci'))).toBe(
      '../../../bus/pci/drivers/vfio-pci',
    );
    expect(exists(root, 'dev/vfio/vfio')).toBe(true);
    // Registering vfio-pci binds nothing: it has no id table, only override matches.
    expect(await driverOf(root, GPU)).toBe('nvidia');

    await toVfio(kernel, root, GPU);
    expect(await driverOf(root, GPU)).toBe('vfio-pci');
    expect(await read(root, `${dev(GPU)}/driver_override`)).toBe('vfio-pci\n');
    expect(exists(root, `sys/bus/pci/drivers/vfio-pci/${GPU}`)).toBe(true);
    expect(exists(root, `sys/bus/pci/drivers/nvidia/${GPU}`)).toBe(false);
    expect(await read(root, `${dev(GPU)}/uevent`)).toMatch(/^DRIVER=vfio-pci\n/);
    expect(exists(root, 'dev/vfio/21')).toBe(true);
    // The audio function still has snd_hda_intel: the group exists but cannot be opened.
    expect(await kernel.groupViable(21)).toBe(false);

    await toVfio(kernel, root, AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(await isGroupViableInModel(root, 21)).toBe(true);
    // The HostFs view: the `driver` link resolves through the bus directory.
    expect(await realpath(path.join(root, dev(GPU), 'driver'))).toBe(
      path.join(root, 'sys/bus/pci/drivers/vfio-pci'),
    );
  });

  it('restores snd_hda_intel by its alias; the GPU stays unbound when modules.alias lacks nvidia’s lines', async () => {
    // A host whose nvidia.ko was loaded outside depmod's view (insmod from a build dir).
    const alias = SCENARIO_MODULES_ALIAS['dual-gpu']
      .split('\n')
      .filter((line) => !NVIDIA_DKMS_LINES.includes(line))
      .join('\n');
    const root = await tree('dual-gpu', alias);
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    await toVfio(kernel, root, GPU);
    await toVfio(kernel, root, AUDIO);

    await toHost(kernel, GPU);
    // The tree's alias file names only nouveau for NVIDIA VGA (and nouveau is not loaded), so
    // nothing registered claims the GPU: drivers_probe succeeds and leaves it unbound.
    expect(await driverOf(root, GPU)).toBeNull();
    expect(await read(root, `${dev(GPU)}/driver_override`)).toBe('(null)\n');
    // Its group node lives on while the audio function is on vfio.
    expect(exists(root, 'dev/vfio/21')).toBe(true);
    // And an explicit bind to nvidia is refused the same way: no id matches, no override.
    expect(await errnoOf(kernel.write(bindPath('nvidia'), GPU))).toBe('ENODEV');

    await toHost(kernel, AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');
    expect(exists(root, 'dev/vfio/21')).toBe(false);
    expect(await kernel.groupViable(21)).toBe(false);
  });

  it('brings nvidia back when modules.alias carries the driver’s own pci: lines', async () => {
    // nvidia.ko's MODULE_DEVICE_TABLE (NVIDIA VGA and 3D controllers), as the scenario's DKMS lines.
    expect(SCENARIO_MODULES_ALIAS['dual-gpu']).toContain(NVIDIA_DKMS_LINES[0]);
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    await toVfio(kernel, root, GPU);
    await toHost(kernel, GPU);
    expect(await driverOf(root, GPU)).toBe('nvidia');
    expect(await read(root, `${dev(GPU)}/uevent`)).toMatch(/^DRIVER=nvidia\n/);

    // `bind` works the same way once it matches; a second bind is EBUSY.
    await kernel.write(unbindPath('nvidia'), GPU);
    await kernel.write(bindPath('nvidia'), GPU);
    expect(await driverOf(root, GPU)).toBe('nvidia');
    expect(await errnoOf(kernel.write(bindPath('nvidia'), `${GPU}\n`))).toBe('EBUSY');
  });

  it('reads its state from the tree: a second model on the same root continues', async () => {
    const root = await tree('dual-gpu');
    await new KernelModel(root).modprobe('vfio_pci');
    await toVfio(new KernelModel(root), root, GPU);
    expect(await driverOf(root, GPU)).toBe('vfio-pci');
  });
});

describe('KernelModel: a tree captured from a real kernel', () => {
  // Found on a real 6.1 guest (kernel-test/): `capture` never copies write-only files, so the
  // capture had no drivers/<d>/bind, unbind, new_id, remove_id, drivers_probe or rescan, and every
  // unbind on it answered ENOENT where the kernel unbinds.
  it('has the write-only files a real kernel always has, and rebinds as on the guest', async () => {
    const root = await tree('dual-gpu');
    const { readdir } = await import('node:fs/promises');
    for (const driver of await readdir(path.join(root, 'sys/bus/pci/drivers'))) {
      for (const control of ['bind', 'unbind', 'new_id', 'remove_id', 'uevent']) {
        await rm(path.join(root, 'sys/bus/pci/drivers', driver, control), { force: true });
      }
    }
    await rm(path.join(root, 'sys/bus/pci/drivers_probe'));
    await rm(path.join(root, 'sys/bus/pci/rescan'));
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    await toVfio(kernel, root, AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(exists(root, 'sys/bus/pci/drivers/snd_hda_intel/bind')).toBe(true);
    expect(exists(root, 'sys/bus/pci/drivers_probe')).toBe(true);
    await toHost(kernel, AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');
  });
});

describe('KernelModel: driver_override', () => {
  it('sets with or without a newline, clears with a newline; a 0-byte write never reaches store()', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    const file = `${dev(GPU)}/driver_override`;
    await kernel.write(overridePath(GPU), 'vfio-pci\n');
    expect(await read(root, file)).toBe('vfio-pci\n');
    await kernel.write(overridePath(GPU), 'pci-stub');
    expect(await read(root, file)).toBe('pci-stub\n');
    // sysfs_kf_write returns 0 for an empty write without calling the attribute's store().
    await kernel.write(overridePath(GPU), '');
    expect(await read(root, file)).toBe('pci-stub\n');
    await kernel.write(overridePath(GPU), '\n');
    expect(await read(root, file)).toBe('(null)\n');
    // Only what precedes the first newline is kept.
    await kernel.write(overridePath(GPU), 'vfio-pci\nnvidia');
    expect(await read(root, file)).toBe('vfio-pci\n');
    // Setting it rebinds nothing.
    expect(await driverOf(root, GPU)).toBe('nvidia');
  });

  it('refuses 4095 bytes and more with EINVAL, changing nothing', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.write(overridePath(GPU), 'x'.repeat(4094));
    expect((await read(root, `${dev(GPU)}/driver_override`)).length).toBe(4095);
    await kernel.write(overridePath(GPU), 'vfio-pci');
    const before = await snapshot(root);
    expect(await errnoOf(kernel.write(overridePath(GPU), 'x'.repeat(4095)))).toBe('EINVAL');
    expect(await errnoOf(kernel.write(overridePath(GPU), 'x'.repeat(5000)))).toBe('EINVAL');
    expect(await snapshot(root)).toBe(before);
  });
});

describe('KernelModel: errno cases', () => {
  it('unbind: ENODEV for a device bound elsewhere, unbound or unknown; ENOENT for an unknown driver', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    const before = await snapshot(root);
    expect(await errnoOf(kernel.write(unbindPath('snd_hda_intel'), GPU))).toBe('ENODEV');
    expect(await errnoOf(kernel.write(unbindPath('nvidia'), '0000:99:00.0'))).toBe('ENODEV');
    expect(await errnoOf(kernel.write(unbindPath('nouveau'), GPU))).toBe('ENOENT');
    expect(await snapshot(root)).toBe(before);

    await kernel.write(unbindPath('nvidia'), `${GPU}\n`);
    expect(await driverOf(root, GPU)).toBeNull();
    expect(await errnoOf(kernel.write(unbindPath('nvidia'), GPU))).toBe('ENODEV');
    // The device's own driver/unbind does not exist once it has no driver.
    expect(await errnoOf(kernel.write(`/sys/bus/pci/devices/${GPU}/driver/unbind`, GPU))).toBe(
      'ENOENT',
    );
  });

  it('unbinds through the device’s own driver link', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.write(`/sys/bus/pci/devices/${AUDIO}/driver/unbind`, AUDIO);
    expect(await driverOf(root, AUDIO)).toBeNull();
  });

  it('bind: EBUSY when bound and matching, ENODEV for an override naming another driver, a non-matching id table or an unknown device', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    const before = await snapshot(root);
    expect(await errnoOf(kernel.write(bindPath('snd_hda_intel'), AUDIO))).toBe('EBUSY');
    expect(await errnoOf(kernel.write(bindPath('i40e'), AUDIO))).toBe('ENODEV');
    expect(await errnoOf(kernel.write(bindPath('snd_hda_intel'), '0000:99:00.0'))).toBe('ENODEV');
    expect(await errnoOf(kernel.write(bindPath('nouveau'), AUDIO))).toBe('ENOENT');
    expect(await snapshot(root)).toBe(before);

    await kernel.write(overridePath(AUDIO), 'vfio-pci');
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    // The override filters first: snd_hda_intel's own alias no longer matters.
    expect(await errnoOf(kernel.write(bindPath('snd_hda_intel'), AUDIO))).toBe('ENODEV');
    await kernel.write(bindPath('vfio-pci'), AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
  });

  it('bind without an override binds a matching driver', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    await kernel.write(bindPath('snd_hda_intel'), AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');
  });

  it('drivers_probe: ENODEV for an unknown address; a bound device stays; an unregistered override leaves it unbound', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    expect(await errnoOf(kernel.write(PROBE, '0000:99:00.0'))).toBe('ENODEV');
    expect(await errnoOf(kernel.write(PROBE, '17:00.0'))).toBe('ENODEV');
    const before = await snapshot(root);
    await kernel.write(PROBE, GPU);
    expect(await snapshot(root)).toBe(before);

    // vfio_pci is not loaded: nothing named vfio-pci is registered, so nothing binds.
    await kernel.write(overridePath(AUDIO), 'vfio-pci');
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    await kernel.write(PROBE, AUDIO);
    expect(await driverOf(root, AUDIO)).toBeNull();
    // Loading the module then binds it: a registered driver probes matching unbound devices.
    await kernel.modprobe('vfio-pci');
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(exists(root, 'dev/vfio/21')).toBe(true);
  });

  it('vfio-pci refuses bridges (EINVAL) and PFs with VFs enabled (EBUSY)', async () => {
    const root = await tree('mlx5-vf');
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    await kernel.write(overridePath('0000:40:01.1'), 'vfio-pci');
    await kernel.write(unbindPath('pcieport'), '0000:40:01.1');
    expect(await errnoOf(kernel.write(bindPath('vfio-pci'), '0000:40:01.1'))).toBe('EINVAL');
    // pcieport comes back through its built-in class match once the override is cleared.
    await kernel.write(overridePath('0000:40:01.1'), '\n');
    await kernel.write(PROBE, '0000:40:01.1');
    expect(await driverOf(root, '0000:40:01.1')).toBe('pcieport');

    // A PF whose driver left SR-IOV on (i40e does when VFs are assigned): vfio-pci will not take it.
    await kernel.write(overridePath('0000:41:00.0'), 'vfio-pci');
    await kernel.write(unbindPath('mlx5_core'), '0000:41:00.0');
    await writeFile(path.join(root, dev('0000:41:00.0'), 'sriov_numvfs'), '2\n');
    expect(await errnoOf(kernel.write(bindPath('vfio-pci'), '0000:41:00.0'))).toBe('EBUSY');
    await kernel.write(PROBE, '0000:41:00.0');
    expect(await driverOf(root, '0000:41:00.0')).toBeNull();
  });

  it('vfio-pci refuses a device without an IOMMU group (EINVAL): no IOMMU, no vfio', async () => {
    const root = await tree('iommu-off');
    const kernel = new KernelModel(root);
    await kernel.modprobe('vfio_pci');
    await kernel.write(overridePath(AUDIO), 'vfio-pci');
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    expect(await errnoOf(kernel.write(bindPath('vfio-pci'), AUDIO))).toBe('EINVAL');
    expect(await driverOf(root, AUDIO)).toBeNull();
  });

  it('unbinding a PF disables SR-IOV: its VFs, their groups and netdevs go, and do not come back with the PF', async () => {
    const root = await tree('mlx5-vf');
    const kernel = new KernelModel(root);
    const pf = '0000:41:00.0';
    await kernel.write(unbindPath('mlx5_core'), pf);
    for (const vf of ['0000:41:00.2', '0000:41:00.3']) expect(exists(root, dev(vf))).toBe(false);
    expect(exists(root, 'sys/kernel/iommu_groups/23')).toBe(false);
    expect(exists(root, 'sys/class/net/enp65s0f0v0')).toBe(false);
    expect(exists(root, 'sys/class/net/enp65s0f0np0')).toBe(false);
    expect(exists(root, `${dev(pf)}/virtfn0`)).toBe(false);
    expect(await read(root, `${dev(pf)}/sriov_numvfs`)).toBe('0\n');
    expect(exists(root, 'sys/bus/pci/drivers/mlx5_core/0000:41:00.2')).toBe(false);

    await kernel.write(PROBE, pf);
    expect(await driverOf(root, pf)).toBe('mlx5_core');
    expect(exists(root, 'sys/class/net/enp65s0f0np0')).toBe(true);
    expect(exists(root, dev('0000:41:00.2'))).toBe(false);
    expect(exists(root, 'sys/class/net/enp65s0f0v0')).toBe(false);
  });

  it('writes to read-only attributes are EACCES, missing ones ENOENT, paths outside /sys EINVAL', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    const before = await snapshot(root);
    expect(await errnoOf(kernel.write(`/sys/bus/pci/devices/${GPU}/vendor`, '0x1234'))).toBe(
      'EACCES',
    );
    expect(await errnoOf(kernel.write(`/sys/bus/pci/devices/${GPU}/no_such`, '1'))).toBe('ENOENT');
    expect(await errnoOf(kernel.write('/etc/hostname', 'x'))).toBe('EINVAL');
    expect(await errnoOf(kernel.write('/sys/../etc/hostname', 'x'))).toBe('EINVAL');
    expect(await errnoOf(kernel.write('/sys/bus/pci/drivers/nvidia/new_id', '10de 2204'))).toBe(
      'EINVAL',
    );
    expect(await snapshot(root)).toBe(before);
  });

  it('drivers_autoprobe and sriov_drivers_autoprobe store what is written', async () => {
    const root = await tree('mlx5-vf');
    const kernel = new KernelModel(root);
    await kernel.write('/sys/bus/pci/drivers_autoprobe', '0');
    expect(await read(root, 'sys/bus/pci/drivers_autoprobe')).toBe('0\n');
    await kernel.write('/sys/bus/pci/drivers_autoprobe', '1\n');
    expect(await read(root, 'sys/bus/pci/drivers_autoprobe')).toBe('1\n');
    const pf = '0000:41:00.0';
    await kernel.write(`/sys/bus/pci/devices/${pf}/sriov_drivers_autoprobe`, '0');
    expect(await read(root, `${dev(pf)}/sriov_drivers_autoprobe`)).toBe('0\n');
    expect(
      await errnoOf(kernel.write(`/sys/bus/pci/devices/${pf}/sriov_drivers_autoprobe`, '2')),
    ).toBe('EINVAL');
    // With VF autoprobe off a VF comes back only by override (pci_device_can_probe).
    await kernel.write(unbindPath('mlx5_core'), '0000:41:00.2');
    await kernel.write(PROBE, '0000:41:00.2');
    expect(await driverOf(root, '0000:41:00.2')).toBeNull();
    expect(await errnoOf(kernel.write(bindPath('mlx5_core'), '0000:41:00.2'))).toBe('ENODEV');
    await kernel.write(`/sys/bus/pci/devices/${pf}/sriov_drivers_autoprobe`, '1');
    await kernel.write(PROBE, '0000:41:00.2');
    expect(await driverOf(root, '0000:41:00.2')).toBe('mlx5_core');
  });

  it('with drivers_autoprobe=0 a module load binds nothing, drivers_probe still does', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.write('/sys/bus/pci/drivers_autoprobe', '0');
    await kernel.write(overridePath(AUDIO), 'vfio-pci');
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    await kernel.modprobe('vfio_pci');
    expect(await driverOf(root, AUDIO)).toBeNull();
    await kernel.write(PROBE, AUDIO);
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
  });
});

describe('KernelModel: modprobe', () => {
  it('knows modules.alias modules and the vfio family; others are ENOENT with modprobe’s message', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    await kernel.modprobe('nvme'); // already loaded
    const error = await kernel.modprobe('no_such_mod').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KernelIoError);
    expect(error).toMatchObject({
      errno: 'ENOENT',
      target: 'modprobe no_such_mod',
      message:
        'modprobe: FATAL: Module no_such_mod not found in directory /lib/modules/6.12.117+deb12-amd64',
    });
    expect(await errnoOf(kernel.modprobe('bad name; rm'))).toBe('EINVAL');

    // nouveau registers and probes the unbound NVIDIA GPU it matches.
    await kernel.write(unbindPath('nvidia'), GPU);
    await kernel.modprobe('nouveau');
    expect(await driverOf(root, GPU)).toBe('nouveau');
    expect(await readlink(path.join(root, 'sys/bus/pci/drivers/nouveau/module'))).toBe(
      '../../../../module/nouveau',
    );
  });

  it('a variant driver registers under its module name, needs vfio_pci_core, and binds only by override', async () => {
    const root = await tree('mlx5-vf');
    const kernel = new KernelModel(root);
    const vf = '0000:41:00.2';
    await kernel.write(overridePath(vf), 'mlx5_vfio_pci');
    await kernel.write(unbindPath('mlx5_core'), vf);
    await kernel.modprobe('mlx5_vfio_pci');
    expect(exists(root, 'sys/bus/pci/drivers/mlx5_vfio_pci/bind')).toBe(true);
    expect(exists(root, 'sys/module/vfio_pci_core')).toBe(true);
    expect(exists(root, 'sys/bus/pci/drivers/vfio-pci')).toBe(false);
    expect(await driverOf(root, vf)).toBe('mlx5_vfio_pci');
    expect(exists(root, 'dev/vfio/23')).toBe(true);
    // The other VF, without an override, stays on mlx5_core.
    expect(await driverOf(root, '0000:41:00.3')).toBe('mlx5_core');
  });
});

describe('KernelModel: faults', () => {
  it('write-fails: the write throws, nothing changes, and `times` runs out', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root, {
      faults: [{ kind: 'write-fails', path: /\/unbind$/, errno: 'EBUSY', times: 1 }],
    });
    const before = await snapshot(root);
    expect(await errnoOf(kernel.write(unbindPath('nvidia'), GPU))).toBe('EBUSY');
    expect(await snapshot(root)).toBe(before);
    await kernel.write(unbindPath('nvidia'), GPU);
    expect(await driverOf(root, GPU)).toBeNull();

    kernel.addFault({ kind: 'write-fails', path: overridePath(AUDIO), errno: 'EIO' });
    expect(await errnoOf(kernel.write(overridePath(AUDIO), 'vfio-pci'))).toBe('EIO');
    expect(await errnoOf(kernel.write(overridePath(AUDIO), 'vfio-pci'))).toBe('EIO');
    kernel.clearFaults();
    await kernel.write(overridePath(AUDIO), 'vfio-pci');
  });

  it('bind-refuses: bind answers the errno, drivers_probe succeeds and leaves it unbound', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root, {
      faults: [{ kind: 'bind-refuses', driver: 'vfio-pci' }],
    });
    await kernel.modprobe('vfio_pci');
    await kernel.write(overridePath(GPU), 'vfio-pci');
    await kernel.write(unbindPath('nvidia'), GPU);
    await kernel.write(PROBE, GPU);
    expect(await driverOf(root, GPU)).toBeNull();
    expect(exists(root, 'dev/vfio/21')).toBe(false);
    expect(await errnoOf(kernel.write(bindPath('vfio-pci'), GPU))).toBe('EIO');
    kernel.clearFaults();
    kernel.addFault({ kind: 'bind-refuses', driver: 'vfio-pci', errno: 'ENOMEM' });
    expect(await errnoOf(kernel.write(bindPath('vfio-pci'), GPU))).toBe('ENOMEM');
  });

  it('probe-hangs: the binding write never settles; with probeHangMs it binds late', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root, { faults: [{ kind: 'probe-hangs', address: AUDIO }] });
    await kernel.modprobe('vfio_pci');
    await kernel.write(overridePath(AUDIO), 'vfio-pci');
    await kernel.write(unbindPath('snd_hda_intel'), AUDIO);
    const hung = kernel.write(PROBE, AUDIO);
    const outcome = await Promise.race([
      hung.then(() => 'settled'),
      new Promise((resolve) => setTimeout(() => resolve('timeout'), 100)),
    ]);
    expect(outcome).toBe('timeout');
    // really_probe links the driver before calling probe(): sysfs already says vfio-pci, but
    // probe() has not registered the vfio device, so there is no group node yet.
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(exists(root, 'dev/vfio/21')).toBe(false);
    // Other devices go on meanwhile; the hung one's lock is held, so writes to it wait too.
    await kernel.write(overridePath(GPU), 'vfio-pci');
    const blocked = kernel.write(overridePath(AUDIO), '\n');
    const blockedOutcome = await Promise.race([
      blocked.then(() => 'settled'),
      new Promise((resolve) => setTimeout(() => resolve('timeout'), 50)),
    ]);
    expect(blockedOutcome).toBe('timeout');

    const slowRoot = await tree('dual-gpu');
    const slow = new KernelModel(slowRoot, {
      faults: [{ kind: 'probe-hangs', address: AUDIO }],
      probeHangMs: 50,
    });
    await slow.modprobe('vfio_pci');
    await slow.write(overridePath(AUDIO), 'vfio-pci');
    await slow.write(unbindPath('snd_hda_intel'), AUDIO);
    const started = Date.now();
    await slow.write(PROBE, AUDIO);
    expect(Date.now() - started).toBeGreaterThanOrEqual(45);
    expect(await driverOf(slowRoot, AUDIO)).toBe('vfio-pci');
    expect(exists(slowRoot, 'dev/vfio/21')).toBe(true);

    // A slow probe that then fails leaves the device unbound again.
    slow.addFault({ kind: 'bind-refuses', driver: 'vfio-pci' });
    await slow.write(unbindPath('vfio-pci'), AUDIO);
    await slow.write(PROBE, AUDIO);
    expect(await driverOf(slowRoot, AUDIO)).toBeNull();
    expect(exists(slowRoot, `sys/bus/pci/drivers/vfio-pci/${AUDIO}`)).toBe(false);
  });

  it('modprobe-fails: the module (also as a dependency) is not inserted', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root, {
      faults: [{ kind: 'modprobe-fails', module: 'vfio_iommu_type1', errno: 'EPERM' }],
    });
    const error = await kernel.modprobe('vfio_pci').catch((e: unknown) => e);
    expect(error).toMatchObject({
      errno: 'EPERM',
      message: "modprobe: ERROR: could not insert 'vfio_iommu_type1': Operation not permitted",
    });
    expect(exists(root, 'sys/bus/pci/drivers/vfio-pci')).toBe(false);
    kernel.clearFaults();
    await kernel.modprobe('vfio_pci');
    expect(exists(root, 'sys/bus/pci/drivers/vfio-pci/bind')).toBe(true);
  });
});

describe('KernelModel: network interfaces', () => {
  it('vanish when the NIC’s driver leaves and return when a host driver binds again', async () => {
    const root = await tree('dual-gpu');
    const kernel = new KernelModel(root);
    const nic = '0000:65:00.1';
    const ifindexBefore = Number(await read(root, 'sys/class/net/enp101s0f1/ifindex'));
    await kernel.modprobe('vfio_pci');
    await toVfio(kernel, root, nic);
    expect(exists(root, 'sys/class/net/enp101s0f1')).toBe(false);
    expect(exists(root, `${dev(nic)}/net`)).toBe(false);
    expect(exists(root, 'sys/class/net/enp101s0f0')).toBe(true);

    await toHost(kernel, nic);
    expect(await driverOf(root, nic)).toBe('i40e');
    expect(await realpath(path.join(root, 'sys/class/net/enp101s0f1/device'))).toBe(
      await realpath(path.join(root, dev(nic))),
    );
    expect(await readlink(path.join(root, 'sys/class/net/enp101s0f1'))).toMatch(
      /^\.\.\/\.\.\/devices\/pci0000:64\/.*\/0000:65:00\.1\/net\/enp101s0f1$/,
    );
    // A re-registered netdev gets a new ifindex.
    expect(Number(await read(root, 'sys/class/net/enp101s0f1/ifindex'))).toBeGreaterThan(
      ifindexBefore,
    );
  });
});

describe('KernelModel: kernel-named interfaces (eth%d, no udev rename)', () => {
  // Found on a real 6.1 guest without udev: the e1000 pair (eth1, eth2) rolled back in reverse
  // order came back as eth2, eth1. The kernel gives a registering netdev the lowest free eth%d
  // (__dev_alloc_name); only udev's predictable names come back as they were.
  it('a returning eth%d netdev takes the lowest free number, not its old name', async () => {
    const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), 'kernel-model-')));
    tempDirs.push(dir);
    const spec = scenario('dual-gpu');
    const eth = (name: string) => name.replace(/^enp101s0f/, 'eth');
    const renamed = {
      ...spec,
      ...(spec.defaultRoute === undefined
        ? {}
        : { defaultRoute: { ...spec.defaultRoute, iface: eth(spec.defaultRoute.iface) } }),
      devices: spec.devices.map((d) =>
        d.netInterfaces === undefined ? d : { ...d, netInterfaces: d.netInterfaces.map(eth) },
      ),
    };
    await buildHostTree(dir, renamed);
    const kernel = new KernelModel(dir);
    const [port0, port1] = ['0000:65:00.0', '0000:65:00.1'];
    const owner = async (name: string) =>
      path.basename(await realpath(path.join(dir, 'sys/class/net', name, 'device')));
    expect(await owner('eth0')).toBe(port0);
    expect(await owner('eth1')).toBe(port1);
    await kernel.modprobe('vfio_pci');
    await toVfio(kernel, dir, port0);
    await toVfio(kernel, dir, port1);
    // Back in reverse order, as a rollback does: the second port registers first.
    await toHost(kernel, port1);
    await toHost(kernel, port0);
    expect(await owner('eth0')).toBe(port1);
    expect(await owner('eth1')).toBe(port0);
    expect(await readlink(path.join(dir, 'sys/class/net/eth0'))).toMatch(
      /0000:65:00\.1\/net\/eth0$/,
    );
  });
});

describe('hotplug / hotUnplug', () => {
  it('adds a NIC under an existing bridge, probes it, and removes it again', async () => {
    const root = await tree('dual-gpu');
    const spec = scenario('dual-gpu').devices.find((d) => d.address === '0000:65:00.1');
    if (spec === undefined) throw new Error('fixture lacks 0000:65:00.1');
    await hotUnplug(root, '0000:65:00.1');
    expect(exists(root, dev('0000:65:00.1'))).toBe(false);
    expect(exists(root, 'sys/kernel/iommu_groups/52')).toBe(false);
    expect(exists(root, 'sys/class/net/enp101s0f1')).toBe(false);
    expect(exists(root, 'sys/bus/pci/drivers/i40e/0000:65:00.1')).toBe(false);

    await hotplug(root, { ...spec, driver: undefined });
    expect(await driverOf(root, '0000:65:00.1')).toBe('i40e');
    expect(exists(root, 'sys/class/net/enp101s0f1/ifindex')).toBe(true);
    expect(await realpath(path.join(root, dev('0000:65:00.1')))).toBe(
      path.join(root, 'sys/devices/pci0000:64/0000:64:02.0/0000:65:00.1'),
    );
    expect(await readlink(path.join(root, 'sys/kernel/iommu_groups/52/devices/0000:65:00.1'))).toBe(
      '../../../../devices/pci0000:64/0000:64:02.0/0000:65:00.1',
    );
  });

  it('removing a bridge removes what is below it and the vfio node of a group left empty', async () => {
    const root = await tree('vfio-bound');
    expect(exists(root, 'dev/vfio/21')).toBe(true);
    await hotUnplug(root, '0000:16:02.0');
    for (const address of ['0000:16:02.0', GPU, AUDIO])
      expect(exists(root, dev(address))).toBe(false);
    expect(exists(root, 'dev/vfio/21')).toBe(false);
    expect(exists(root, 'sys/bus/pci/drivers/vfio-pci/0000:17:00.0')).toBe(false);
  });

  it('a hot-added VF sits beside its PF, takes the next virtfn link and its driver by alias', async () => {
    const root = await tree('mlx5-vf');
    await hotplug(root, {
      address: '0000:41:00.4',
      vendorId: '15b3',
      deviceId: '101e',
      classCode: '020000',
      physfn: '0000:41:00.0',
      iommuGroup: 25,
      netInterfaces: ['enp65s0f0v2'],
    });
    expect(await realpath(path.join(root, dev('0000:41:00.4')))).toBe(
      path.join(root, 'sys/devices/pci0000:40/0000:40:01.1/0000:41:00.4'),
    );
    expect(await readlink(path.join(root, dev('0000:41:00.0'), 'virtfn2'))).toBe('../0000:41:00.4');
    expect(await readlink(path.join(root, dev('0000:41:00.4'), 'physfn'))).toBe('../0000:41:00.0');
    expect(await driverOf(root, '0000:41:00.4')).toBe('mlx5_core');
    expect(exists(root, 'sys/class/net/enp65s0f0v2')).toBe(true);
    const pf = scenario('mlx5-vf').devices.find((d) => d.address === '0000:41:00.0');
    if (pf === undefined) throw new Error('fixture lacks its PF');
    await expect(hotplug(root, { ...pf, driver: null })).rejects.toThrow(/already present/);
  });

  it('a hot-added device with an override binds to the vfio driver', async () => {
    const root = await tree('vfio-bound');
    await hotplug(root, {
      address: '0000:66:00.0',
      vendorId: '10de',
      deviceId: '2204',
      classCode: '030000',
      driverOverride: 'vfio-pci',
      iommuGroup: 60,
    });
    expect(await driverOf(root, '0000:66:00.0')).toBe('vfio-pci');
    expect(exists(root, 'dev/vfio/60')).toBe(true);
    expect(await isGroupViableInModel(root, 60)).toBe(true);
  });
});
