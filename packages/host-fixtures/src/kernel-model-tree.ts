/**
 * Reading and changing a host tree the way the kernel model needs: the tree is the only state (the
 * agent's HostFs reads the same files), so every question is answered from disk and every change
 * is written back at once. What sysfs cannot hold (registration order of drivers, the netdevs a
 * NIC had before its driver left) lives in a hidden state file under the root, which HostFs never
 * reads.
 */
import {
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import { PCI_BUS_DEVICES_DIR, PCI_DRIVERS_DIR } from './build-tree';
import { TreeWriter } from './tree-writer';

export const STATE_FILE = '.kernel-model/state.json';

/** A netdev that vanished with its driver, kept so a host driver's return can bring it back. */
export interface NetdevRecord {
  name: string;
  /** Root-relative directory of the netdev (`…/0000:65:00.0/net/enp101s0f0`). */
  dir: string;
  /** Root-relative directory its `device` link pointed to (the PCI function or its virtio<N>). */
  owner: string;
  operstate: string;
  /** virtio-pci's `virtio<N>` child, removed and re-created with the netdev; null otherwise. */
  virtioDir: string | null;
}

export interface ModelState {
  /** PCI drivers in registration order: the order __device_attach tries them in. */
  driverOrder: string[];
  /** PCI address → netdevs removed when its driver unbound. */
  netdevs: Record<string, NetdevRecord[]>;
  /** The last ifindex handed out: dev_index_reserve allocates cyclically, never reusing one. */
  lastIfindex?: number;
}

/** One PCI function as the driver core sees it, read from the tree. */
export interface DeviceState {
  address: string;
  /** Root-relative resolved directory under sys/devices. */
  path: string;
  driver: string | null;
  override: string | null;
  modalias: string;
  /** 6 lowercase hex digits. */
  classCode: string;
  iommuGroup: number | null;
  /** PF address when this is a VF. */
  physfn: string | null;
  /** sriov_numvfs of a PF; 0 otherwise. */
  numVfs: number;
}

export class SysTree {
  readonly out: TreeWriter;

  /** `locked` answers for attributes swapped for FIFOs while a write holds their device's lock. */
  constructor(
    readonly root: string,
    private readonly locked?: { valueOf(abs: string): string | undefined },
  ) {
    this.out = new TreeWriter(root);
  }

  abs(rel: string): string {
    return path.join(this.root, ...rel.split('/'));
  }

  /** Root-relative form of an absolute path inside the root; null when it escapes the root. */
  rel(abs: string): string | null {
    const rel = path.relative(this.root, abs);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return null;
    return rel.split(path.sep).join('/');
  }

  async exists(rel: string): Promise<boolean> {
    try {
      await lstat(this.abs(rel));
      return true;
    } catch {
      return false;
    }
  }

  async text(rel: string): Promise<string | null> {
    const locked = this.locked?.valueOf(path.resolve(this.abs(rel)));
    if (locked !== undefined) return locked;
    try {
      return await readFile(this.abs(rel), 'utf8');
    } catch {
      return null;
    }
  }

  async linkBase(rel: string): Promise<string | null> {
    try {
      return path.posix.basename(await readlink(this.abs(rel)));
    } catch {
      return null;
    }
  }

  /** Where a link (or a path through links) ends up, root-relative; null when it dangles. */
  async resolve(rel: string): Promise<string | null> {
    try {
      return this.rel(await realpath(this.abs(rel)));
    } catch {
      return null;
    }
  }

  async list(rel: string): Promise<string[]> {
    try {
      return (await readdir(this.abs(rel))).sort();
    } catch {
      return [];
    }
  }

  async remove(rel: string): Promise<void> {
    await rm(this.abs(rel), { recursive: true, force: true });
  }

  async addresses(): Promise<string[]> {
    return this.list(PCI_BUS_DEVICES_DIR);
  }

  async device(address: string): Promise<DeviceState | null> {
    const dir = await this.resolve(`${PCI_BUS_DEVICES_DIR}/${address}`);
    if (dir === null) return null;
    const override = (await this.text(`${dir}/driver_override`))?.replace(/\n$/, '') ?? '(null)';
    const group = await this.linkBase(`${dir}/iommu_group`);
    const physfnDir = await this.resolve(`${dir}/physfn`);
    return {
      address,
      path: dir,
      driver: await this.linkBase(`${dir}/driver`),
      override: override === '(null)' ? null : override,
      modalias: (await this.text(`${dir}/modalias`))?.trim() ?? '',
      classCode: ((await this.text(`${dir}/class`))?.trim() ?? '0x000000').replace(/^0x/, ''),
      iommuGroup: group === null ? null : Number(group),
      physfn: physfnDir === null ? null : path.posix.basename(physfnDir),
      numVfs: Number((await this.text(`${dir}/sriov_numvfs`))?.trim() ?? '0') || 0,
    };
  }

  /**
   * A tree `capture`d from a real host lacks the write-only files: capture never reads `bind`,
   * `unbind`, `new_id`, `remove_id`, `drivers_probe` or `rescan`, yet the kernel always has them
   * for every registered driver and the bus. Found on the
   * real-kernel test: on a guest's capture every unbind answered ENOENT. Creates only what is
   * missing, so a fixture tree (which has them all) is left as it is.
   */
  async completeWriteOnlyFiles(): Promise<void> {
    const missing = async (rel: string): Promise<boolean> => !(await this.exists(rel));
    if (!(await this.exists(PCI_DRIVERS_DIR))) return;
    for (const driver of await this.list(PCI_DRIVERS_DIR)) {
      if (driver.startsWith('.')) continue;
      for (const control of ['bind', 'unbind', 'new_id', 'remove_id', 'uevent']) {
        const rel = `${PCI_DRIVERS_DIR}/${driver}/${control}`;
        if (await missing(rel)) await this.out.file(rel, '');
      }
    }
    for (const control of ['drivers_probe', 'rescan']) {
      if (await missing(`sys/bus/pci/${control}`))
        await this.out.file(`sys/bus/pci/${control}`, '');
    }
    // drivers_autoprobe is readable but the agent never reads it, so a capture lacks it too; 1 is
    // the kernel's default.
    if (await missing('sys/bus/pci/drivers_autoprobe')) {
      await this.out.attr('sys/bus/pci/drivers_autoprobe', 1);
    }
  }

  async driverRegistered(driver: string): Promise<boolean> {
    return this.exists(`${PCI_DRIVERS_DIR}/${driver}/bind`);
  }

  /** The module a driver comes from (its `module` link); null for a built-in driver. */
  async driverModule(driver: string): Promise<string | null> {
    return this.linkBase(`${PCI_DRIVERS_DIR}/${driver}/module`);
  }

  async release(): Promise<string> {
    return (await this.text('proc/sys/kernel/osrelease'))?.trim() ?? 'unknown';
  }

  /** modules.alias of the running release, where kmod looks for it; empty when absent. */
  async modulesAlias(): Promise<string> {
    const release = await this.release();
    return (
      (await this.text(`lib/modules/${release}/modules.alias`)) ??
      (await this.text(`usr/lib/modules/${release}/modules.alias`)) ??
      ''
    );
  }

  async loadState(): Promise<ModelState> {
    const text = await this.text(STATE_FILE);
    if (text !== null) {
      const parsed: unknown = JSON.parse(text);
      if (isModelState(parsed)) return parsed;
    }
    // First use of this tree: the drivers already registered, alphabetically (the order the
    // tree builder wrote them in; the real boot order is not recorded in sysfs).
    return { driverOrder: await this.list(PCI_DRIVERS_DIR), netdevs: {} };
  }

  async saveState(state: ModelState): Promise<void> {
    await mkdir(path.dirname(this.abs(STATE_FILE)), { recursive: true });
    await writeFile(this.abs(STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
  }

  /** Registered drivers in registration order; ones the state does not know go last, sorted. */
  async driversInOrder(state: ModelState): Promise<string[]> {
    const present = new Set((await this.list(PCI_DRIVERS_DIR)).filter((d) => !d.startsWith('.')));
    const ordered = state.driverOrder.filter((d) => present.has(d));
    const rest = [...present].filter((d) => !ordered.includes(d));
    return [...ordered, ...rest];
  }

  /** `DRIVER=` in the device's uevent follows the bound driver, as pci_uevent prints it. */
  async setUeventDriver(devicePath: string, driver: string | null): Promise<void> {
    const current = await this.text(`${devicePath}/uevent`);
    if (current === null) return;
    const lines = current.split('\n').filter((l) => l !== '' && !l.startsWith('DRIVER='));
    if (driver !== null) lines.unshift(`DRIVER=${driver}`);
    await writeFile(this.abs(`${devicePath}/uevent`), `${lines.join('\n')}\n`);
  }

  /** Netdevs whose directory lies under the device: what its driver registered. */
  async netdevsOf(devicePath: string): Promise<NetdevRecord[]> {
    const records: NetdevRecord[] = [];
    for (const name of await this.list('sys/class/net')) {
      const dir = await this.resolve(`sys/class/net/${name}`);
      if (dir === null || !dir.startsWith(`${devicePath}/`)) continue;
      const owner = (await this.resolve(`${dir}/device`)) ?? devicePath;
      const virtio = /^(.*\/virtio\d+)\/net\/[^/]+$/.exec(dir);
      records.push({
        name,
        dir,
        owner,
        operstate: (await this.text(`${dir}/operstate`))?.trim() ?? 'up',
        virtioDir: virtio?.[1]?.startsWith(`${devicePath}/`) === true ? virtio[1] : null,
      });
    }
    return records;
  }

  /** The next ifindex: the kernel allocates them cyclically, so a freed one is not reused. */
  async nextIfindex(state: ModelState): Promise<number> {
    await this.noteIfindexes(state);
    state.lastIfindex = (state.lastIfindex ?? 0) + 1;
    return state.lastIfindex;
  }

  /** Remembers the highest ifindex in use, before netdevs that hold it are removed. */
  async noteIfindexes(state: ModelState): Promise<void> {
    let max = state.lastIfindex ?? 0;
    for (const name of await this.list('sys/class/net')) {
      const value = Number((await this.text(`sys/class/net/${name}/ifindex`))?.trim());
      if (Number.isFinite(value)) max = Math.max(max, value);
    }
    state.lastIfindex = max;
  }
}

function isModelState(value: unknown): value is ModelState {
  if (typeof value !== 'object' || value === null) return false;
  const order: unknown = Reflect.get(value, 'driverOrder');
  const netdevs: unknown = Reflect.get(value, 'netdevs');
  return (
    Array.isArray(order) &&
    order.every((d) => typeof d === 'string') &&
    typeof netdevs === 'object' &&
    netdevs !== null
  );
}

export { PCI_BUS_DEVICES_DIR, PCI_DRIVERS_DIR };
