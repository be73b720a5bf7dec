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
 * link while probe() runs.
 *
 * Not imitated: dynamic ids (new_id/remove_id are refused with EINVAL), sriov_numvfs writes and
 * VF creation, EPROBE_DEFER, sriov_numvfs 0 blocking on a held VF (holders: kernel-model-holders), rmmod,
 * /proc/interrupts and other driver-owned state (block devices under nvme, framebuffers, fbcon),
 * modules.dep and aliases given to modprobe, and no-IOMMU mode. Returning netdevs get fresh
 * ifindexes; a predictable name (what udev gives) comes back as it was, a kernel `eth%d` name is
 * allocated again (the lowest free number).
 */

import path from 'node:path';
import {
  type AliasEntry,
  fnmatch,
  type KernelErrno,
  type KernelIo,
  KernelIoError,
  parseModulesAlias,
} from '@vfio-fleet/core';
import { isVfioDriver, writeModule, writePciDriver } from './build-tree';
import type { DeviceSpec } from './host-spec';
import {
  DeviceHolds,
  type HolderProcess,
  heldUnder,
  removeHolderProc,
  writeHolderProc,
} from './kernel-model-holders';
import { plugDevice, unplugDevice } from './kernel-model-hotplug';
import {
  type DeviceState,
  type ModelState,
  type NetdevRecord,
  PCI_BUS_DEVICES_DIR,
  PCI_DRIVERS_DIR,
  SysTree,
} from './kernel-model-tree';

export type KernelFault =
  /** The write throws `errno` and changes nothing; `times` failures, then it works (default: always). */
  | { kind: 'write-fails'; path: string | RegExp; errno: KernelErrno; times?: number }
  /** The driver's probe() fails (default EIO): bind answers the errno, drivers_probe succeeds unbound. */
  | { kind: 'bind-refuses'; driver: string; errno?: KernelErrno }
  /** Probing this device does not return for `probeHangMs` (default: never). */
  | { kind: 'probe-hangs'; address: string }
  /** modprobe cannot insert this module (default EIO), even as another module's dependency. */
  | { kind: 'modprobe-fails'; module: string; errno?: KernelErrno };

export interface KernelModelOptions {
  faults?: KernelFault[];
  /** How long a `probe-hangs` probe takes before it completes (and binds); default forever. */
  probeHangMs?: number;
}

/** driver_set_override keeps room for a newline within a page: a write of 4095 bytes is too long. */
const OVERRIDE_MAX = 4095;

const STRERROR: Record<KernelErrno, string> = {
  EBUSY: 'Device or resource busy',
  ENODEV: 'No such device',
  EINVAL: 'Invalid argument',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  EPERM: 'Operation not permitted',
  EACCES: 'Permission denied',
  ETIMEDOUT: 'Connection timed out',
  EEXIST: 'File exists',
  ENOMEM: 'Cannot allocate memory',
  EROFS: 'Read-only file system',
  EUNKNOWN: 'Unknown error',
};

/** The vfio family: no `pci:` aliases (vfio_pci's are override-only), yet modprobe knows them. */
const VFIO_FAMILY = new Set(['vfio', 'vfio_pci', 'vfio_pci_core', 'vfio_iommu_type1', 'irqbypass']);

/**
 * Built-in drivers' id tables (modules.alias lists only modules). pcieport claims PCIe ports by
 * class (pcie_portdrv_pci_ids: PCI_CLASS_BRIDGE_PCI_NORMAL, and _SUBTRACTIVE for some ports).
 */
const BUILTIN_ID_TABLES: Record<string, string[]> = {
  pcieport: ['pci:v*d*sv*sd*bc06sc04i00*', 'pci:v*d*sv*sd*bc06sc04i01*'],
};

/** The PCI driver name a module registers: KBUILD_MODNAME except where the source names it. */
function pciDriverName(module: string): string {
  if (module === 'vfio_pci') return 'vfio-pci';
  if (module === 'pci_stub') return 'pci-stub';
  return module;
}

/** What modprobe loads first (modules.dep and vfio's softdep on its IOMMU backend). */
function dependencies(module: string): string[] {
  if (module === 'vfio') return ['vfio_iommu_type1'];
  if (module === 'vfio_pci_core') return ['vfio', 'irqbypass'];
  if (module === 'vfio_pci') return ['vfio_pci_core'];
  // mlx5_vfio_pci links against mlx5_core for the device's migration commands.
  if (module === 'mlx5_vfio_pci') return ['vfio_pci_core', 'mlx5_core'];
  if (module.endsWith('_vfio_pci')) return ['vfio_pci_core'];
  return [];
}

const MODULE_NAME = /^[A-Za-z0-9_-]{1,55}$/;

function isBridge(classCode: string): boolean {
  // PCI-to-PCI and CardBus bridges: header types vfio-pci refuses.
  return (
    classCode.startsWith('0604') || classCode.startsWith('0609') || classCode.startsWith('0607')
  );
}

/** sysfs_streq: equal up to one trailing newline on either side. */
function sysfsValue(value: string): string {
  return value.endsWith('\n') ? value.slice(0, -1) : value;
}

/** Serializes model operations, like the device and driver locks the kernel takes around them. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async acquire(): Promise<() => void> {
    let release: () => void = () => undefined;
    const next = new Promise<void>((resolve) => {
      release = resolve;
    });
    const previous = this.tail;
    this.tail = previous.then(() => next);
    await previous;
    return release;
  }
}

/** A held lock that can be let go while waiting on a hung probe, so other devices go on. */
class Held {
  private constructor(
    private readonly mutex: Mutex,
    private release: () => void,
  ) {}

  static async take(mutex: Mutex): Promise<Held> {
    return new Held(mutex, await mutex.acquire());
  }

  async wait(promise: Promise<void>): Promise<void> {
    this.release();
    try {
      await promise;
    } finally {
      this.release = await this.mutex.acquire();
    }
  }

  done(): void {
    this.release();
  }
}

/** Per-root kernel state that is not in the tree: locks and probes in flight. */
const KERNELS = new Map<
  string,
  { mutex: Mutex; probing: Map<string, Promise<void>>; holds: DeviceHolds; completed: boolean }
>();

type ProbeResult = { ok: true } | { ok: false; errno: KernelErrno };

export class KernelModel implements KernelIo {
  private readonly tree: SysTree;
  private faults: KernelFault[];
  private readonly probeHangMs: number | undefined;
  private readonly mutex: Mutex;
  /** Devices inside a hung probe: anything else touching them waits, as on the device lock. */
  private readonly probing: Map<string, Promise<void>>;
  /** Device fds users hold (kernel-model-holders). */
  private readonly holds: DeviceHolds;
  private aliasCache: { text: string; entries: AliasEntry[] } | undefined;
  private readonly kernel: { completed: boolean };

  constructor(root: string, options: KernelModelOptions = {}) {
    this.tree = new SysTree(root);
    // One kernel per tree: models opened on the same root (an executor's, a test's hotplug())
    // share its locks and its in-flight probes, as everything on one host shares one kernel.
    const key = path.resolve(root);
    let kernel = KERNELS.get(key);
    if (kernel === undefined) {
      kernel = {
        mutex: new Mutex(),
        probing: new Map(),
        holds: new DeviceHolds(),
        completed: false,
      };
      KERNELS.set(key, kernel);
    }
    this.kernel = kernel;
    this.mutex = kernel.mutex;
    this.probing = kernel.probing;
    this.holds = kernel.holds;
    this.faults = [...(options.faults ?? [])];
    this.probeHangMs = options.probeHangMs;
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
        await this.loadModule(held, state, module.replaceAll('-', '_'), module, target);
      } finally {
        // Dependencies loaded before a failure stay loaded, as with a real modprobe.
        await this.tree.saveState(state);
      }
    } finally {
      held.done();
    }
  }

  /**
   * Whether opening /dev/vfio/<group> would succeed: the node exists (some member is on a vfio
   * driver) and no member is held by a driver that does DMA on its own (iommu_group_claim_dma_owner:
   * only drivers with driver_managed_dma — vfio, pci-stub, pcieport — may stay bound).
   */
  async groupViable(group: number): Promise<boolean> {
    if (!(await this.tree.exists(`dev/vfio/${group}`))) return false;
    for (const address of await this.tree.list(`sys/kernel/iommu_groups/${group}/devices`)) {
      const device = await this.tree.device(address);
      if (device === null || device.driver === null) continue;
      if (isBridge(device.classCode)) {
        if (device.driver !== 'pcieport') return false;
      } else if (!isVfioDriver(device.driver) && device.driver !== 'pci-stub') {
        return false;
      }
    }
    return true;
  }

  /** Takes the kernel's lock; the first time on a tree, gives a captured tree its write-only files. */
  private async lock(): Promise<Held> {
    const held = await Held.take(this.mutex);
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
      await this.waitForProbe(held, address);
      const device = await this.tree.device(address);
      if (device === null || device.driver !== driver) throw fail('ENODEV', hostPath);
      if (await this.blockWhileHeld(held, [device])) return;
      const state = await this.tree.loadState();
      await this.unbindDevice(state, device);
      await this.tree.saveState(state);
      return;
    }
    if (file === 'bind') {
      await this.waitForProbe(held, address);
      const device = await this.tree.device(address);
      // bind_store: a device that does not match is ENODEV before the driver core sees EBUSY.
      if (device === null || !(await this.matches(device, driver))) throw fail('ENODEV', hostPath);
      if (device.driver !== null) throw fail('EBUSY', hostPath);
      const state = await this.tree.loadState();
      const result = await this.probe(held, state, device, driver);
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
    await this.waitForProbe(held, address);
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
      case 'reset':
        // reset_store accepts only 1; the reset itself leaves nothing in sysfs to change.
        if (sysfsValue(value).trim() !== '1') throw fail('EINVAL', hostPath);
        return;
      case 'rescan':
        return;
      case 'remove': {
        if (sysfsValue(value).trim() !== '1') throw fail('EINVAL', hostPath);
        await this.blockWhileHeld(held, await heldUnder(this.tree, this.holds, device));
        await this.removeDevices(address);
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
    await this.waitForProbe(held, address);
    const device = await this.tree.device(address);
    if (device === null) throw fail('ENODEV', hostPath);
    if (device.driver !== null) return;
    const state = await this.tree.loadState();
    await this.attach(held, state, device);
    await this.tree.saveState(state);
  }

  // -------------------------------------------------------------------------------------------
  // Driver core

  /**
   * __device_attach: every registered driver in registration order that matches gets a probe;
   * a failed probe lets the next one try. Success whether or not one binds.
   */
  private async attach(held: Held, state: ModelState, device: DeviceState): Promise<void> {
    for (const driver of await this.tree.driversInOrder(state)) {
      if (!(await this.matches(device, driver))) continue;
      const result = await this.probe(held, state, device, driver);
      if (result.ok) return;
    }
  }

  /** pci_match_device: the override filters, then the id table, then the override alone matches. */
  private async matches(device: DeviceState, driver: string): Promise<boolean> {
    if (!(await this.tree.driverRegistered(driver))) return false;
    if (device.override !== null && device.override !== driver) return false;
    const table = await this.idTable(driver);
    if (table.some((pattern) => fnmatch(pattern, device.modalias))) return true;
    return device.override !== null;
  }

  private async idTable(driver: string): Promise<string[]> {
    const module = await this.tree.driverModule(driver);
    if (module === null) return BUILTIN_ID_TABLES[driver] ?? [];
    return (await this.aliasEntries())
      .filter((e) => e.bus === 'pci' && e.module === module)
      .map((e) => e.pattern);
  }

  /** Parsed modules.alias, re-parsed only when the file's text changes (a real one is ~30k lines). */
  private async aliasEntries(): Promise<AliasEntry[]> {
    const text = await this.tree.modulesAlias();
    if (this.aliasCache?.text !== text) {
      this.aliasCache = { text, entries: parseModulesAlias(text).entries };
    }
    return this.aliasCache.entries;
  }

  /** pci_device_probe and the driver's probe(), then driver_bound's sysfs links. */
  private async probe(
    held: Held,
    state: ModelState,
    device: DeviceState,
    driver: string,
  ): Promise<ProbeResult> {
    // pci_device_can_probe: a VF of a PF with sriov_drivers_autoprobe=0 binds only by override.
    if (device.physfn !== null && device.override === null) {
      const pf = await this.tree.device(device.physfn);
      const autoprobe =
        pf === null ? null : await this.tree.text(`${pf.path}/sriov_drivers_autoprobe`);
      if (autoprobe?.trim() === '0') return { ok: false, errno: 'ENODEV' };
    }
    const failure = await this.runProbe(held, device, driver);
    if (failure !== null) {
      // really_probe's probe_failed path takes the links driver_sysfs_add made back down.
      await this.driverSysfsRemove(device, driver);
      return { ok: false, errno: failure };
    }
    await this.bindDevice(state, device, driver);
    return { ok: true };
  }

  /**
   * The driver's probe(): a hang (really_probe has already made the `driver` links, so sysfs shows
   * the device bound while probe() runs), an injected refusal, or vfio's own checks. Null = bound.
   */
  private async runProbe(
    held: Held,
    device: DeviceState,
    driver: string,
  ): Promise<KernelErrno | null> {
    if (this.faults.some((f) => f.kind === 'probe-hangs' && f.address === device.address)) {
      await this.driverSysfsAdd(device, driver);
      const hang =
        this.probeHangMs === undefined
          ? new Promise<void>(() => undefined)
          : new Promise<void>((resolve) => setTimeout(resolve, this.probeHangMs));
      this.probing.set(device.address, hang);
      try {
        await held.wait(hang);
      } finally {
        this.probing.delete(device.address);
      }
    }
    const refused = this.faults.find((f) => f.kind === 'bind-refuses' && f.driver === driver);
    if (refused?.kind === 'bind-refuses') return refused.errno ?? 'EIO';
    if (isVfioDriver(driver)) {
      // vfio_pci_core_register_device: normal headers only, no PF with VFs enabled, and a group.
      if (isBridge(device.classCode)) return 'EINVAL';
      if (device.numVfs > 0) return 'EBUSY';
      if (device.iommuGroup === null) return 'EINVAL';
    }
    return null;
  }

  /** driver_sysfs_add: the device's `driver` link and the driver's link to the device. */
  private async driverSysfsAdd(device: DeviceState, driver: string): Promise<void> {
    await this.driverSysfsRemove(device, driver);
    await this.tree.out.link(`${device.path}/driver`, `${PCI_DRIVERS_DIR}/${driver}`);
    await this.tree.out.link(`${PCI_DRIVERS_DIR}/${driver}/${device.address}`, device.path);
  }

  private async driverSysfsRemove(device: DeviceState, driver: string): Promise<void> {
    await this.tree.remove(`${device.path}/driver`);
    await this.tree.remove(`${PCI_DRIVERS_DIR}/${driver}/${device.address}`);
  }

  private async bindDevice(state: ModelState, device: DeviceState, driver: string): Promise<void> {
    const { out } = this.tree;
    await this.driverSysfsAdd(device, driver);
    await this.tree.setUeventDriver(device.path, driver);
    // A host driver's probe() enables its device; vfio enables it only when a user opens it.
    await this.setEnable(device, !isVfioDriver(driver));
    if (isVfioDriver(driver) && device.iommuGroup !== null) {
      // vfio creates the group's char device with the group's first vfio device.
      if (!(await this.tree.exists(`dev/vfio/${device.iommuGroup}`))) {
        await out.file(`dev/vfio/${device.iommuGroup}`, '');
      }
    } else if (!isVfioDriver(driver) && driver !== 'pci-stub') {
      await this.restoreNetdevs(state, device.address);
    }
  }

  /** device_release_driver: the driver's remove() takes its netdevs and vfio group with it. */
  private async unbindDevice(state: ModelState, device: DeviceState): Promise<void> {
    const driver = device.driver;
    if (driver === null) return;
    if (device.numVfs > 0) await this.disableSriov(state, device);
    const netdevs = await this.tree.netdevsOf(device.path);
    if (netdevs.length > 0) await this.tree.noteIfindexes(state);
    for (const netdev of netdevs) {
      await this.tree.remove(`sys/class/net/${netdev.name}`);
      await this.tree.remove(netdev.virtioDir ?? netdev.dir);
    }
    if ((await this.tree.list(`${device.path}/net`)).length === 0) {
      await this.tree.remove(`${device.path}/net`);
    }
    if (netdevs.length > 0) {
      state.netdevs[device.address] = [...(state.netdevs[device.address] ?? []), ...netdevs];
    }
    await this.driverSysfsRemove(device, driver);
    await this.tree.setUeventDriver(device.path, null);
    await this.setEnable(device, false);
    if (isVfioDriver(driver) && device.iommuGroup !== null) {
      if (!(await this.groupHasVfioDevice(device.iommuGroup))) {
        await this.tree.remove(`dev/vfio/${device.iommuGroup}`);
      }
    }
  }

  /** `enable`, where the tree has one (a capture of an old agent's copy may not). */
  private async setEnable(device: DeviceState, enabled: boolean): Promise<void> {
    if (await this.tree.exists(`${device.path}/enable`)) {
      await this.tree.out.attr(`${device.path}/enable`, enabled ? 1 : 0);
    }
  }

  /**
   * A PF driver's remove() disables SR-IOV (pci_disable_sriov in i40e, ixgbe, mlx5, vfio-pci...):
   * its VFs are unbound and removed, and they do not come back when a driver binds the PF again,
   * because sriov_numvfs is 0 until someone writes it.
   */
  private async disableSriov(state: ModelState, pf: DeviceState): Promise<void> {
    for (const address of await this.tree.addresses()) {
      const vf = await this.tree.device(address);
      if (vf === null || vf.physfn !== pf.address) continue;
      await this.unbindDevice(state, vf);
      delete state.netdevs[vf.address];
      await unplugDevice(this.tree, vf);
    }
    await this.tree.out.attr(`${pf.path}/sriov_numvfs`, 0);
    await this.tree.remove(`${pf.path}/sriov_vf_device`);
  }

  private async groupHasVfioDevice(group: number): Promise<boolean> {
    for (const address of await this.tree.list(`sys/kernel/iommu_groups/${group}/devices`)) {
      const device = await this.tree.device(address);
      if (device !== null && isVfioDriver(device.driver)) return true;
    }
    return false;
  }

  private async restoreNetdevs(state: ModelState, address: string): Promise<void> {
    const records = state.netdevs[address];
    if (records === undefined) return;
    delete state.netdevs[address];
    for (const record of records) await this.writeNetdev(state, record);
  }

  private async writeNetdev(state: ModelState, record: NetdevRecord): Promise<void> {
    const { out } = this.tree;
    const name = await this.netdevName(record.name);
    const dir = `${record.dir.slice(0, record.dir.lastIndexOf('/'))}/${name}`;
    // A re-registered netdev gets a fresh ifindex.
    await out.attr(`${dir}/ifindex`, await this.tree.nextIfindex(state));
    await out.attr(`${dir}/operstate`, record.operstate);
    await out.link(`${dir}/device`, record.owner);
    await out.link(`sys/class/net/${name}`, dir);
  }

  /**
   * The name a returning netdev gets. Drivers register `eth%d` and the kernel takes the lowest
   * free number (__dev_alloc_name); udev then renames it to its predictable name, which for a
   * predictable name (enp101s0f0) is the old one. A name still of the eth%d form is one nothing
   * renamed (no udev, net.ifnames=0), so it is the kernel's pick again. Found on a real 6.1 guest
   * without udev: a group rolled back in reverse order swapped eth1 and eth2.
   */
  private async netdevName(old: string): Promise<string> {
    if (!/^eth\d+$/.test(old)) return old;
    const used = new Set(await this.tree.list('sys/class/net'));
    for (let n = 0; ; n += 1) if (!used.has(`eth${n}`)) return `eth${n}`;
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
      await this.waitForProbe(held, address);
      const device = await this.tree.device(address);
      if (device === null || !isVfioDriver(device.driver) || device.iommuGroup === null) {
        throw new Error(`holdDevice ${address}: only a device on a vfio driver can be opened`);
      }
      if (!(await this.groupViable(device.iommuGroup))) {
        throw new Error(`holdDevice ${address}: group ${device.iommuGroup} is not viable`);
      }
      await writeHolderProc(this.tree, process, device.iommuGroup);
      this.holds.open(address);
      this.holds.openPid(process.pid);
      await this.setEnable(device, true);
    } finally {
      held.done();
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      const again = await this.lock();
      try {
        if (this.holds.closePid(process.pid)) await removeHolderProc(this.tree, process.pid);
        const last = this.holds.close(address);
        const device = await this.tree.device(address);
        if (last && device !== null) await this.setEnable(device, false);
      } finally {
        again.done();
      }
    };
  }

  /**
   * vfio's remove() of a held device waits for its last fd, after driver_sysfs_remove already
   * took the `driver` links down: sysfs shows the device unbound while the write is still blocked.
   * Other model operations on the device wait behind it (the device lock). True when one waited
   * (its unbind is then complete).
   */
  private async blockWhileHeld(held: Held, devices: readonly DeviceState[]): Promise<boolean> {
    let waited = false;
    for (const device of devices) {
      if (!this.holds.isHeld(device.address) || device.driver === null) continue;
      waited = true;
      await this.driverSysfsRemove(device, device.driver);
      const released = this.holds.whenReleased(device.address);
      this.probing.set(device.address, released);
      try {
        await held.wait(released);
      } finally {
        this.probing.delete(device.address);
      }
      // The rest of the unbind (uevent, the group's char device) completes once it is free.
      const state = await this.tree.loadState();
      await this.unbindDevice(state, device);
      await this.tree.saveState(state);
    }
    return waited;
  }

  private async waitForProbe(held: Held, address: string): Promise<void> {
    for (let hang = this.probing.get(address); hang !== undefined; ) {
      await held.wait(hang);
      hang = this.probing.get(address);
    }
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
        await this.bindDevice(state, device, spec.driver);
      } else if (
        spec.driver === undefined &&
        (await this.tree.text('sys/bus/pci/drivers_autoprobe'))?.trim() !== '0'
      ) {
        await this.attach(held, state, device);
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
      await this.waitForProbe(held, address);
      await this.removeDevices(address);
    } finally {
      held.done();
    }
  }

  /**
   * pci_stop_and_remove_bus_device: everything below the device goes first (children of a bridge,
   * deepest first; a PF's VFs), each unbound from its driver, then removed from every view.
   */
  private async removeDevices(address: string): Promise<void> {
    const { tree } = this;
    const top = await tree.device(address);
    if (top === null) return;
    const doomed: DeviceState[] = [];
    for (const other of await tree.addresses()) {
      const device = await tree.device(other);
      if (device === null) continue;
      if (device.path === top.path || device.path.startsWith(`${top.path}/`)) doomed.push(device);
      else if (device.physfn === address) doomed.push(device);
    }
    doomed.sort((a, b) => b.path.split('/').length - a.path.split('/').length);
    const state = await tree.loadState();
    for (const doomedDevice of doomed) {
      // Re-read: removing a PF has already taken its VFs with it.
      const device = await tree.device(doomedDevice.address);
      if (device === null || device.path !== doomedDevice.path) continue;
      await this.unbindDevice(state, device);
      // A removed NIC's interfaces never come back, even if a twin is plugged at its address.
      delete state.netdevs[device.address];
      await unplugDevice(tree, device);
    }
    await tree.saveState(state);
  }

  // -------------------------------------------------------------------------------------------
  // Modules

  private async loadModule(
    held: Held,
    state: ModelState,
    module: string,
    asGiven: string,
    target: string,
  ): Promise<void> {
    if (await this.tree.exists(`sys/module/${module}`)) return;
    const aliases = await this.moduleAliases(module);
    if (aliases === null) {
      throw new KernelIoError(
        'ENOENT',
        target,
        `modprobe: FATAL: Module ${asGiven} not found in directory /lib/modules/${await this.tree.release()}`,
      );
    }
    for (const dep of dependencies(module)) await this.loadModule(held, state, dep, dep, target);
    const fault = this.faults.find(
      (f) => f.kind === 'modprobe-fails' && f.module.replaceAll('-', '_') === module,
    );
    if (fault?.kind === 'modprobe-fails') {
      const errno = fault.errno ?? 'EIO';
      throw new KernelIoError(
        errno,
        target,
        `modprobe: ERROR: could not insert '${module}': ${STRERROR[errno]}`,
      );
    }
    const registers =
      module === 'vfio_pci' || module === 'pci_stub' || aliases > 0 ? [pciDriverName(module)] : [];
    for (const driver of registers) {
      await writePciDriver(this.tree.out, driver, module, []);
      state.driverOrder = [...state.driverOrder.filter((d) => d !== driver), driver];
    }
    await writeModule(this.tree.out, module, registers);
    // The container device comes with vfio itself (CONFIG_VFIO_CONTAINER).
    if (module === 'vfio') await this.tree.out.file('dev/vfio/vfio', '');
    if ((await this.tree.text('sys/bus/pci/drivers_autoprobe'))?.trim() === '0') return;
    // driver_attach: the new driver probes every unbound device it matches.
    for (const driver of registers) {
      for (const address of await this.tree.addresses()) {
        await this.waitForProbe(held, address);
        const device = await this.tree.device(address);
        if (device === null || device.driver !== null) continue;
        if (await this.matches(device, driver)) await this.probe(held, state, device, driver);
      }
    }
  }

  /**
   * How many PCI aliases (`pci:` or `vfio_pci:`) the module has in modules.alias; null when modprobe
   * would not find it (neither in the file nor of the vfio family / pci_stub).
   */
  private async moduleAliases(module: string): Promise<number | null> {
    const text = await this.tree.modulesAlias();
    const entries = await this.aliasEntries();
    const pci = entries.filter((e) => e.module === module).length;
    if (pci > 0) return pci;
    if (VFIO_FAMILY.has(module) || module === 'pci_stub') return 0;
    // Modules with only other buses' aliases (usb:, acpi*:, platform:) still load.
    for (const line of text.split('\n')) {
      const name = line.trim().split(/\s+/)[2];
      if (line.startsWith('alias ') && name?.replaceAll('-', '_') === module) return 0;
    }
    return null;
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

function fail(errno: KernelErrno, target: string): KernelIoError {
  return new KernelIoError(errno, target, `${target}: ${STRERROR[errno]}`);
}

/** kstrtobool: 1/0, y/n, on/off (case-insensitive first letters), as sriov_drivers_autoprobe takes. */
function parseBool(value: string): boolean | null {
  const v = sysfsValue(value).toLowerCase();
  if (/^(1|y|yes|on)$/.test(v)) return true;
  if (/^(0|n|no|off)$/.test(v)) return false;
  return null;
}

export function hotplug(root: string, device: DeviceSpec): Promise<void> {
  return new KernelModel(root).hotplug(device);
}

export function hotUnplug(root: string, address: string): Promise<void> {
  return new KernelModel(root).hotUnplug(address);
}
