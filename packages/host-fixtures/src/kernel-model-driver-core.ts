/**
 * The PCI driver core of the kernel model: matching (pci_match_device), probing (really_probe,
 * __device_attach), binding and unbinding with the sysfs links they make, device removal, and
 * the waits a hung probe or a held device impose on everything else touching that device.
 */
import path from 'node:path';
import { type AliasEntry, fnmatch, type KernelErrno, parseModulesAlias } from '@vfio-fleet/core';
import { isVfioDriver } from './build-tree';
import { heldUnder } from './kernel-model-holders';
import { unplugDevice } from './kernel-model-hotplug';
import { type Held, isBridge, type KernelFault, type KernelState } from './kernel-model-kernel';
import { restoreNetdevs, takeNetdevs } from './kernel-model-netdevs';
import {
  type DeviceState,
  type ModelState,
  PCI_DRIVERS_DIR,
  type SysTree,
} from './kernel-model-tree';

/**
 * Built-in drivers' id tables (modules.alias lists only modules). pcieport claims PCIe ports by
 * class (pcie_portdrv_pci_ids: PCI_CLASS_BRIDGE_PCI_NORMAL, and _SUBTRACTIVE for some ports).
 */
const BUILTIN_ID_TABLES: Record<string, string[]> = {
  pcieport: ['pci:v*d*sv*sd*bc06sc04i00*', 'pci:v*d*sv*sd*bc06sc04i01*'],
};

export type ProbeResult = { ok: true } | { ok: false; errno: KernelErrno };

export class DriverCore {
  private aliasCache: { text: string; entries: AliasEntry[] } | undefined;

  constructor(
    readonly tree: SysTree,
    readonly kernel: KernelState,
    /** The faults armed now (a test adds and clears them as it goes). */
    readonly faults: () => readonly KernelFault[],
    private readonly probeHangMs: number | undefined,
  ) {}

  /**
   * __device_attach: every registered driver in registration order that matches gets a probe;
   * a failed probe lets the next one try. Success whether or not one binds.
   */
  async attach(held: Held, state: ModelState, device: DeviceState): Promise<void> {
    for (const driver of await this.tree.driversInOrder(state)) {
      if (!(await this.matches(device, driver))) continue;
      const result = await this.probe(held, state, device, driver);
      if (result.ok) return;
    }
  }

  /** pci_match_device: the override filters, then the id table, then the override alone matches. */
  async matches(device: DeviceState, driver: string): Promise<boolean> {
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
  async aliasEntries(): Promise<AliasEntry[]> {
    const text = await this.tree.modulesAlias();
    if (this.aliasCache?.text !== text) {
      this.aliasCache = { text, entries: parseModulesAlias(text).entries };
    }
    return this.aliasCache.entries;
  }

  /** pci_device_probe and the driver's probe(), then driver_bound's sysfs links. */
  async probe(
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
    const faults = this.faults();
    if (faults.some((f) => f.kind === 'probe-hangs' && f.address === device.address)) {
      await this.driverSysfsAdd(device, driver);
      const hang =
        this.probeHangMs === undefined
          ? new Promise<void>(() => undefined)
          : new Promise<void>((resolve) => setTimeout(resolve, this.probeHangMs));
      this.kernel.probing.set(device.address, hang);
      try {
        await held.wait(hang);
      } finally {
        this.kernel.probing.delete(device.address);
      }
    }
    const refused = this.faults().find((f) => f.kind === 'bind-refuses' && f.driver === driver);
    if (refused?.kind === 'bind-refuses') return refused.errno ?? 'EIO';
    if (await this.groupClaimedAgainst(device, driver)) return 'EBUSY';
    if (isVfioDriver(driver)) {
      // vfio_pci_core_register_device: normal headers only, no PF with VFs enabled, and a group.
      if (isBridge(device.classCode)) return 'EINVAL';
      if (device.numVfs > 0) return 'EBUSY';
      if (device.iommuGroup === null) return 'EINVAL';
    }
    return null;
  }

  /**
   * iommu_device_use_default_domain: while a user holds a device of the group (vfio claimed its
   * DMA ownership), a driver that does DMA on its own cannot bind any member (EBUSY, measured on
   * 6.1 with two NICs in one group). Drivers with driver_managed_dma may.
   */
  private async groupClaimedAgainst(device: DeviceState, driver: string): Promise<boolean> {
    if (device.iommuGroup === null || isVfioDriver(driver)) return false;
    if (driver === 'pci-stub' || driver === 'pcieport') return false;
    const members = await this.tree.list(`sys/kernel/iommu_groups/${device.iommuGroup}/devices`);
    return members.some((address) => this.kernel.holds.isHeld(address));
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

  async bindDevice(state: ModelState, device: DeviceState, driver: string): Promise<void> {
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
      await restoreNetdevs(this.tree, state, device.address);
    }
  }

  /** device_release_driver: the driver's remove() takes its netdevs and vfio group with it. */
  async unbindDevice(state: ModelState, device: DeviceState): Promise<void> {
    const driver = device.driver;
    if (driver === null) return;
    if (device.numVfs > 0) await this.disableSriov(state, device);
    await takeNetdevs(this.tree, state, device.address, device.path);
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
  async setEnable(device: DeviceState, enabled: boolean): Promise<void> {
    if (await this.tree.exists(`${device.path}/enable`)) {
      await this.tree.out.attr(`${device.path}/enable`, enabled ? 1 : 0);
    }
  }

  /**
   * A PF driver's remove() disables SR-IOV (pci_disable_sriov in i40e, ixgbe, mlx5, vfio-pci...):
   * its VFs are unbound and removed, and they do not come back when a driver binds the PF again,
   * because sriov_numvfs is 0 until someone writes it.
   */
  async disableSriov(state: ModelState, pf: DeviceState): Promise<void> {
    for (const address of await this.tree.addresses()) {
      const vf = await this.tree.device(address);
      if (vf === null || vf.physfn !== pf.address) continue;
      await this.unbindDevice(state, vf);
      delete state.netdevs[vf.address];
      await unplugDevice(this.tree, vf);
    }
    // sriov_vf_device stays: the PF's SR-IOV capability says it, enabled or not.
    await this.tree.out.attr(`${pf.path}/sriov_numvfs`, 0);
  }

  private async groupHasVfioDevice(group: number): Promise<boolean> {
    for (const address of await this.tree.list(`sys/kernel/iommu_groups/${group}/devices`)) {
      const device = await this.tree.device(address);
      if (device !== null && isVfioDriver(device.driver)) return true;
    }
    return false;
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

  /**
   * vfio's remove() of a held device waits for its last fd, after driver_sysfs_remove already
   * took the `driver` links down: sysfs shows the device unbound while the write is still blocked.
   * Other model operations on the device wait behind it (the device lock). True when one waited
   * (its unbind is then complete).
   */
  async blockWhileHeld(held: Held, devices: readonly DeviceState[]): Promise<boolean> {
    let waited = false;
    for (const device of devices) {
      if (!this.kernel.holds.isHeld(device.address) || device.driver === null) continue;
      waited = true;
      await this.driverSysfsRemove(device, device.driver);
      const released = this.kernel.holds.whenReleased(device.address);
      this.kernel.probing.set(device.address, released);
      const unlock = await this.kernel.locked.lock(device.path);
      try {
        await held.wait(released);
      } finally {
        this.kernel.probing.delete(device.address);
        await unlock();
      }
      // The rest of the unbind (uevent, the group's char device) completes once it is free.
      const state = await this.tree.loadState();
      await this.unbindDevice(state, device);
      await this.tree.saveState(state);
    }
    return waited;
  }

  /**
   * A PF driver's remove() disables SR-IOV (disableSriov): a VF a user holds blocks it as in
   * `echo 0 > sriov_numvfs`, with the PF's `driver` link already gone and its lock held.
   */
  async blockOnHeldVfs(held: Held, pf: DeviceState): Promise<void> {
    if (pf.numVfs === 0 || pf.driver === null) return;
    const vfs = (await heldUnder(this.tree, this.kernel.holds, pf)).filter(
      (d) => d.physfn === pf.address,
    );
    if (vfs.length === 0) return;
    await this.driverSysfsRemove(pf, pf.driver);
    let finish: () => void = () => undefined;
    const busy = new Promise<void>((resolve) => {
      finish = resolve;
    });
    this.kernel.probing.set(pf.address, busy);
    const unlock = await this.kernel.locked.lock(pf.path);
    try {
      await this.blockWhileHeld(held, vfs);
      // What a blocked reader gets: the count once remove() is done (the caller finishes it).
      this.kernel.locked.update(path.resolve(this.tree.abs(`${pf.path}/sriov_numvfs`)), '0\n');
    } finally {
      await unlock();
      if (this.kernel.probing.get(pf.address) === busy) this.kernel.probing.delete(pf.address);
      finish();
    }
  }

  async waitForProbe(held: Held, address: string): Promise<void> {
    for (let hang = this.kernel.probing.get(address); hang !== undefined; ) {
      await held.wait(hang);
      hang = this.kernel.probing.get(address);
    }
  }

  /** A `remove` of `top`: blocks on any held device it takes with it, then removes them all. */
  async removeHeldOrNot(held: Held, top: DeviceState): Promise<void> {
    await this.blockWhileHeld(held, await heldUnder(this.tree, this.kernel.holds, top));
    await this.removeDevices(top.address);
  }

  /**
   * pci_stop_and_remove_bus_device: everything below the device goes first (children of a bridge,
   * deepest first; a PF's VFs), each unbound from its driver, then removed from every view.
   */
  async removeDevices(address: string): Promise<void> {
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
}
