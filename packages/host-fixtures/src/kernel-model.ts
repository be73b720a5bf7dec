/**
 * A model of the Linux PCI driver core over a fixture tree, behind the same KernelIo interface the
 * agent uses on a live host, so executors are tested against what the kernel actually does:
 * driver_override (drivers/base/driver.c driver_set_override), bind/unbind/drivers_probe
 * (drivers/base/bus.c, dd.c), PCI matching (drivers/pci/pci-driver.c pci_match_device) and
 * vfio's group char devices. The tree is the state: every call reads it and writes the changes
 * sysfs would show, so HostFs scans of the same root see the result.
 *
 * Matching uses modules.alias as the id table of a modular driver (depmod derives it from the
 * driver's MODULE_DEVICE_TABLE, so the tree's alias file is the driver's id table as far as the
 * tree can say). A driver whose module has no `pci:` line in the file therefore matches nothing
 * without an override, exactly as a real driver with an empty id table: drivers_probe leaves the
 * device unbound and `bind` answers ENODEV.
 *
 * Kernel details kept on purpose: a 0-byte write is a no-op (sysfs_kf_write never calls store()),
 * so only `\n` clears driver_override; `bind` checks the match before EBUSY (bind_store), so a
 * bound device that does not match answers ENODEV; a failed probe lets the next matching driver
 * try (__device_attach_driver); a PF's driver leaving disables SR-IOV; sysfs shows the `driver`
 * link while probe() runs; sriov_numvfs writes create and remove VFs (kernel-model-sriov); an
 * unbind, remove or sriov_numvfs 0 that waits for a holder (kernel-model-holders) keeps the
 * device lock, so driver_override and sriov_numvfs reads hang meanwhile
 * (kernel-model-device-lock).
 *
 * Not imitated: dynamic ids (new_id/remove_id are refused with EINVAL), EPROBE_DEFER, rmmod,
 * module parameters (vfio-pci's enable_sriov: a PF on vfio-pci cannot configure VFs), the netdevs
 * of VFs that sriov_numvfs creates, PF drivers that leave SR-IOV enabled on remove (nvme does;
 * the model disables it for every driver, waiting for held VFs as sriov_numvfs 0 does),
 * /proc/interrupts and other driver-owned state (block devices under nvme,
 * framebuffers, fbcon), modules.dep and aliases given to modprobe, and no-IOMMU mode. Netdevs:
 * kernel-model-netdevs.
 */

import { type KernelErrno, type KernelIo, KernelIoError } from '@vfio-fleet/core';
import { isVfioDriver } from './build-tree';
import type { DeviceSpec } from './host-spec';
import { DriverCore } from './kernel-model-driver-core';
import { type HolderProcess, removeHolderProc, writeHolderProc } from './kernel-model-holders';
import { plugDevice } from './kernel-model-hotplug';
import {
  fail,
  Held,
  type KernelFault,
  type KernelState,
  kernelFor,
  parseBool,
  STRERROR,
  sysfsValue,
} from './kernel-model-kernel';
import { loadModule, MODULE_NAME } from './kernel-model-modules';
import { writeNumVfs } from './kernel-model-sriov';
import { type DeviceState, PCI_BUS_DEVICES_DIR, SysTree } from './kernel-model-tree';

export type { KernelFault } from './kernel-model-kernel';

export interface KernelModelOptions {
  faults?: KernelFault[];
  /** How long a `probe-hangs` probe takes before it completes (and binds); default forever. */
  probeHangMs?: number;
}

/** driver_set_override keeps room for a newline within a page: a write of 4095 bytes is too long. */
const OVERRIDE_MAX = 4095;

export class KernelModel implements KernelIo {
  private readonly tree: SysTree;
  private faults: KernelFault[];
  private readonly kernel: KernelState;
  private readonly core: DriverCore;

  constructor(root: string, options: KernelModelOptions = {}) {
    this.kernel = kernelFor(root);
    this.tree = new SysTree(root, this.kernel.locked);
    this.faults = [...(options.faults ?? [])];
    this.core = new DriverCore(this.tree, this.kernel, () => this.faults, options.probeHangMs);
  }

  addFault(fault: KernelFault): void {
    this.faults.push(fault);
  }

  clearFaults(): void {
    this.faults = [];
  }

  // -------------------------------------------------------------------------------------------
  // KernelIo

  async write(hostPath: string, value: string): Promise<void> {
    const injected = this.takeWriteFault(hostPath);
    if (injected !== null) throw fail(injected, hostPath);
    if (!hostPath.startsWith('/sys/') || hostPath.split('/').includes('..')) {
      throw new KernelIoError('EINVAL', hostPath, `${hostPath}: the kernel model only writes /sys`);
    }
    const held = await this.lock();
    try {
      await this.dispatchWrite(held, hostPath, value);
    } finally {
      held.done();
    }
  }

  async modprobe(module: string): Promise<void> {
    const target = `modprobe ${module}`;
    if (!MODULE_NAME.test(module)) {
      throw new KernelIoError(
        'EINVAL',
        target,
        `modprobe: invalid module name ${JSON.stringify(module)}`,
      );
    }
    const held = await this.lock();
    try {
      const state = await this.tree.loadState();
      try {
        await loadModule(this.core, held, state, module.replaceAll('-', '_'), module, target);
      } finally {
        // Dependencies loaded before a failure stay loaded, as with a real modprobe.
        await this.tree.saveState(state);
      }
    } finally {
      held.done();
    }
  }

  /** Whether opening /dev/vfio/<group> would succeed (DriverCore.groupViable). */
  groupViable(group: number): Promise<boolean> {
    return this.core.groupViable(group);
  }

  /** Takes the kernel's lock; the first time on a tree, gives a captured tree its write-only files. */
  private async lock(): Promise<Held> {
    const held = await Held.take(this.kernel.mutex);
    if (!this.kernel.completed) {
      try {
        await this.tree.completeWriteOnlyFiles();
        this.kernel.completed = true;
      } catch (error) {
        held.done();
        throw error;
      }
    }
    return held;
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  private async dispatchWrite(held: Held, hostPath: string, value: string): Promise<void> {
    const resolved = await this.tree.resolve(hostPath.slice(1));
    // open(2) fails before any write: a missing attribute, or a `driver/unbind` with no driver.
    if (resolved === null) throw fail('ENOENT', hostPath);
    if (resolved === 'sys/bus/pci/drivers_probe') return this.driversProbe(held, hostPath, value);
    if (resolved === 'sys/bus/pci/drivers_autoprobe') {
      // drivers_autoprobe_store looks at the first character only.
      await this.tree.out.attr(resolved, value.startsWith('0') ? 0 : 1);
      return;
    }
    if (resolved === 'sys/bus/pci/rescan') return;
    const driverFile = /^sys\/bus\/pci\/drivers\/([^/]+)\/([^/]+)$/.exec(resolved);
    if (driverFile?.[1] !== undefined && driverFile[2] !== undefined) {
      return this.driverWrite(held, hostPath, driverFile[1], driverFile[2], value);
    }
    const slash = resolved.lastIndexOf('/');
    const dir = resolved.slice(0, slash);
    const attribute = resolved.slice(slash + 1);
    const address = dir.slice(dir.lastIndexOf('/') + 1);
    if (
      dir.startsWith('sys/devices/') &&
      (await this.tree.resolve(`${PCI_BUS_DEVICES_DIR}/${address}`)) === dir
    ) {
      return this.deviceWrite(held, hostPath, address, attribute, value);
    }
    // kernfs_fop_open refuses write access to attributes without a store method.
    throw fail('EACCES', hostPath);
  }

  private async driverWrite(
    held: Held,
    hostPath: string,
    driver: string,
    file: string,
    value: string,
  ): Promise<void> {
    const address = sysfsValue(value);
    if (file === 'unbind') {
      await this.core.waitForProbe(held, address);
      const device = await this.tree.device(address);
      if (device === null || device.driver !== driver) throw fail('ENODEV', hostPath);
      if (await this.core.blockWhileHeld(held, [device])) return;
      await this.core.blockOnHeldVfs(held, device);
      const state = await this.tree.loadState();
      await this.core.unbindDevice(state, device);
      await this.tree.saveState(state);
      return;
    }
    if (file === 'bind') {
      await this.core.waitForProbe(held, address);
      const device = await this.tree.device(address);
      // bind_store: a device that does not match is ENODEV before the driver core sees EBUSY.
      if (device === null || !(await this.core.matches(device, driver)))
        throw fail('ENODEV', hostPath);
      if (device.driver !== null) throw fail('EBUSY', hostPath);
      const state = await this.tree.loadState();
      const result = await this.core.probe(held, state, device, driver);
      await this.tree.saveState(state);
      if (!result.ok) throw fail(result.errno, hostPath);
      return;
    }
    if (file === 'uevent') return;
    if (file === 'new_id' || file === 'remove_id') {
      // Plans never write dynamic ids (they grab every matching device, hot-plugged twins too).
      throw new KernelIoError('EINVAL', hostPath, `${hostPath}: dynamic ids are not modelled`);
    }
    throw fail('EACCES', hostPath);
  }

  private async deviceWrite(
    held: Held,
    hostPath: string,
    address: string,
    attribute: string,
    value: string,
  ): Promise<void> {
    await this.core.waitForProbe(held, address);
    const device = await this.tree.device(address);
    if (device === null) throw fail('ENODEV', hostPath);
    switch (attribute) {
      case 'driver_override':
        return this.setOverride(hostPath, device, value);
      case 'sriov_drivers_autoprobe': {
        const flag = parseBool(value);
        if (flag === null) throw fail('EINVAL', hostPath);
        await this.tree.out.attr(`${device.path}/sriov_drivers_autoprobe`, flag ? 1 : 0);
        return;
      }
      case 'sriov_numvfs':
        return writeNumVfs(this.core, held, hostPath, device, value);
      case 'reset':
        // reset_store accepts only 1; the reset itself leaves nothing in sysfs to change.
        if (sysfsValue(value).trim() !== '1') throw fail('EINVAL', hostPath);
        return;
      case 'rescan':
        return;
      case 'remove': {
        if (sysfsValue(value).trim() !== '1') throw fail('EINVAL', hostPath);
        await this.core.removeHeldOrNot(held, device);
        return;
      }
      default:
        throw new KernelIoError(
          'EACCES',
          hostPath,
          `${hostPath}: ${STRERROR.EACCES} (read-only, or a write the model does not imitate)`,
        );
    }
  }

  /** driver_set_override: a write of 0 bytes never reaches store(); `\n` or leading NUL clears. */
  private async setOverride(hostPath: string, device: DeviceState, value: string): Promise<void> {
    const bytes = Buffer.byteLength(value);
    if (bytes === 0) return;
    if (bytes >= OVERRIDE_MAX) throw fail('EINVAL', hostPath);
    const untilNul = value.split('\0')[0] ?? '';
    const name = untilNul.split('\n')[0] ?? '';
    await this.tree.out.attr(`${device.path}/driver_override`, name === '' ? '(null)' : name);
  }

  private async driversProbe(held: Held, hostPath: string, value: string): Promise<void> {
    const address = sysfsValue(value);
    await this.core.waitForProbe(held, address);
    const device = await this.tree.device(address);
    if (device === null) throw fail('ENODEV', hostPath);
    if (device.driver !== null) return;
    const state = await this.tree.loadState();
    await this.core.attach(held, state, device);
    await this.tree.saveState(state);
  }

  // -------------------------------------------------------------------------------------------
  // Users of vfio devices (kernel-model-holders)

  /**
   * A user opens `address` as QEMU does (group, container, device fd): `enable` reads 1 and the
   * fds show in /proc/<pid>. Returns the release (the process closing them, or exiting); a
   * blocked unbind of the device completes right after it.
   */
  async holdDevice(address: string, process: HolderProcess): Promise<() => Promise<void>> {
    const held = await this.lock();
    try {
      await this.core.waitForProbe(held, address);
      const device = await this.tree.device(address);
      if (device === null || !isVfioDriver(device.driver) || device.iommuGroup === null) {
        throw new Error(`holdDevice ${address}: only a device on a vfio driver can be opened`);
      }
      if (!(await this.groupViable(device.iommuGroup))) {
        throw new Error(`holdDevice ${address}: group ${device.iommuGroup} is not viable`);
      }
      await writeHolderProc(this.tree, process, device.iommuGroup);
      this.kernel.holds.open(address);
      this.kernel.holds.openPid(process.pid);
      await this.core.setEnable(device, true);
    } finally {
      held.done();
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      const again = await this.lock();
      try {
        if (this.kernel.holds.closePid(process.pid)) await removeHolderProc(this.tree, process.pid);
        const last = this.kernel.holds.close(address);
        const device = await this.tree.device(address);
        if (last && device !== null) await this.core.setEnable(device, false);
      } finally {
        again.done();
      }
    };
  }

  // -------------------------------------------------------------------------------------------
  // Hot-plug

  /**
   * A device appearing as pciehp / an ACPI hot-add adds it: its directory under its bridge (or
   * beside its PF), its bus and group links, then bus_probe_device. `driver` undefined lets the
   * model probe it (drivers_autoprobe permitting); a name binds that registered driver; null
   * leaves it unbound. Its netdevs exist while a host driver holds it.
   */
  async hotplug(spec: DeviceSpec): Promise<void> {
    const held = await this.lock();
    try {
      const state = await this.tree.loadState();
      await plugDevice(this.tree, state, spec);
      const device = await this.tree.device(spec.address);
      if (device === null) throw new Error(`hotplug ${spec.address}: device did not appear`);
      if (typeof spec.driver === 'string') {
        if (!(await this.tree.driverRegistered(spec.driver))) {
          throw new Error(`hotplug ${spec.address}: driver ${spec.driver} is not registered`);
        }
        await this.core.bindDevice(state, device, spec.driver);
      } else if (
        spec.driver === undefined &&
        (await this.tree.text('sys/bus/pci/drivers_autoprobe'))?.trim() !== '0'
      ) {
        await this.core.attach(held, state, device);
      }
      await this.tree.saveState(state);
    } finally {
      held.done();
    }
  }

  /** A surprise or orderly hot-remove (pci_stop_and_remove_bus_device); same as writing `remove`. */
  async hotUnplug(address: string): Promise<void> {
    const held = await this.lock();
    try {
      await this.core.waitForProbe(held, address);
      await this.core.removeDevices(address);
    } finally {
      held.done();
    }
  }

  private takeWriteFault(hostPath: string): KernelErrno | null {
    const index = this.faults.findIndex(
      (f) =>
        f.kind === 'write-fails' &&
        (typeof f.path === 'string' ? f.path === hostPath : f.path.test(hostPath)),
    );
    const fault = this.faults[index];
    if (fault?.kind !== 'write-fails') return null;
    if (fault.times !== undefined) {
      const left = fault.times - 1;
      if (left <= 0) this.faults.splice(index, 1);
      else this.faults[index] = { ...fault, times: left };
    }
    return fault.errno;
  }
}

/** Whether /dev/vfio/<group> in the tree could be opened (see KernelModel.groupViable). */
export function isGroupViableInModel(root: string, group: number): Promise<boolean> {
  return new KernelModel(root).groupViable(group);
}

export function hotplug(root: string, device: DeviceSpec): Promise<void> {
  return new KernelModel(root).hotplug(device);
}

export function hotUnplug(root: string, address: string): Promise<void> {
  return new KernelModel(root).hotUnplug(address);
}
