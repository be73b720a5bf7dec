/**
 * Copies the files `scan` reads (docs/host-files.md) from a host into a directory tree that
 * `scan --root DIR` reads back to the same snapshot: for bug reports, and for tests of hosts we do
 * not have. Symlinks are recreated with their original text, so the copy keeps sysfs's topology
 * (parents, groups, drivers); attribute files become regular files. Only named attributes are
 * read: write-only or side-effecting ones (`reset`, `bind`, `remove`, `config`) never are, and
 * `reset` is recorded by an empty file because its presence is the fact.
 */
import { lstat, mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AgentError } from '../errors';
import type { HostFs } from '../host-fs';
import { IOMMU_GROUPS_DIR } from '../inventory/read-iommu';
import { modulesAliasCandidates } from '../inventory/read-modules-alias';
import { PCI_DEVICES_DIR } from '../inventory/read-pci-devices';
import { PCI_IDS_CANDIDATES } from '../inventory/read-pci-ids';
import { captureHolders } from './capture-holders';

/** Plain text files read whole. */
const HOST_FILES = [
  '/proc/cmdline',
  '/proc/sys/kernel/osrelease',
  '/proc/sys/kernel/hostname',
  '/proc/cpuinfo',
  '/proc/interrupts',
  '/proc/self/mountinfo',
  '/proc/self/mounts',
  '/proc/mounts',
  '/proc/net/route',
  '/proc/net/ipv6_route',
  '/etc/hostname',
  '/etc/machine-id',
];

/** Readable PCI device attributes the agent uses. */
const PCI_ATTRIBUTES = [
  'vendor',
  'device',
  'subsystem_vendor',
  'subsystem_device',
  'class',
  'revision',
  'modalias',
  'driver_override',
  'numa_node',
  'sriov_totalvfs',
  'sriov_numvfs',
  'sriov_drivers_autoprobe',
  'reset_method',
  'boot_vga',
  'enable',
];

/** Symlinks in a PCI device directory (kept as links: their targets carry the facts). */
const PCI_LINKS = ['driver', 'driver/module', 'iommu_group', 'physfn'];

export interface CaptureResult {
  files: number;
  links: number;
  directories: number;
}

export async function captureHost(source: HostFs, outDir: string): Promise<CaptureResult> {
  await prepareOutDir(outDir);
  const copier = new TreeCopier(source, outDir);

  for (const file of HOST_FILES) await copier.copy(file);
  const release = await source.readAttr('/proc/sys/kernel/osrelease');
  if (release) for (const file of modulesAliasCandidates(release)) await copier.copy(file);
  for (const file of PCI_IDS_CANDIDATES) {
    if (await copier.copy(file)) break;
  }

  for (const address of await source.listDir(PCI_DEVICES_DIR)) {
    await capturePciDevice(source, copier, `${PCI_DEVICES_DIR}/${address}`);
  }

  for (const group of await source.listDir(IOMMU_GROUPS_DIR)) {
    await copier.copy(`${IOMMU_GROUPS_DIR}/${group}`);
    for (const device of await source.listDir(`${IOMMU_GROUPS_DIR}/${group}/devices`)) {
      await copier.copy(`${IOMMU_GROUPS_DIR}/${group}/devices/${device}`);
    }
  }
  for (const unit of await source.listDir('/sys/class/iommu')) {
    await copier.copy(`/sys/class/iommu/${unit}`);
  }

  for (const module of await source.listDir('/sys/module')) {
    await copier.copy(`/sys/module/${module}`);
    for (const driver of await source.listDir(`/sys/module/${module}/drivers`)) {
      if (driver.startsWith('pci:')) {
        await copier.copy(`/sys/module/${module}/drivers/${driver}`);
      }
    }
  }
  await copier.copy('/dev/vfio');
  for (const node of await source.listDir('/dev/vfio')) await copier.touch(`/dev/vfio/${node}`);

  await captureBlockDevices(source, copier);
  await captureNetDevices(source, copier);
  for (const vtcon of await source.listDir('/sys/class/vtconsole')) {
    await copier.copy(`/sys/class/vtconsole/${vtcon}/bind`);
    await copier.copy(`/sys/class/vtconsole/${vtcon}/name`);
  }
  for (const fb of await source.listDir('/sys/class/graphics')) {
    await copier.copy(`/sys/class/graphics/${fb}/device`);
  }
  await captureHolders(source, copier);
  return copier.result;
}

async function capturePciDevice(source: HostFs, copier: TreeCopier, dir: string): Promise<void> {
  await copier.copy(dir);
  for (const attribute of PCI_ATTRIBUTES) await copier.copy(`${dir}/${attribute}`);
  for (const link of PCI_LINKS) await copier.copy(`${dir}/${link}`);
  if (await source.exists(`${dir}/reset`)) await copier.touch(`${dir}/reset`);
  for (const entry of await source.listDir(dir)) {
    if (/^virtfn\d+$/.test(entry)) await copier.copy(`${dir}/${entry}`);
    // The vfio device cdev (6.6+): its name maps /dev/vfio/devices/vfio<N> to this device.
    if (entry === 'vfio-dev') {
      for (const cdev of await source.listDir(`${dir}/vfio-dev`)) {
        await copier.copy(`${dir}/vfio-dev/${cdev}`);
      }
    }
    if (entry === 'net' || /^virtio\d+$/.test(entry)) {
      const netDir = entry === 'net' ? `${dir}/net` : `${dir}/${entry}/net`;
      for (const iface of await source.listDir(netDir)) {
        await copier.copy(`${netDir}/${iface}`);
      }
    }
  }
}

/** Root disk lookups: by device number, by name, and through dm/md `slaves/`. */
async function captureBlockDevices(source: HostFs, copier: TreeCopier): Promise<void> {
  const blockDirs = new Set<string>();
  for (const dir of ['/sys/dev/block', '/sys/class/block', '/sys/block']) {
    for (const entry of await source.listDir(dir)) {
      await copier.copy(`${dir}/${entry}`);
      const resolved = await source.resolve(`${dir}/${entry}`);
      if (resolved !== null) blockDirs.add(resolved);
    }
  }
  for (const dir of blockDirs) {
    for (const slave of await source.listDir(`${dir}/slaves`)) {
      await copier.copy(`${dir}/slaves/${slave}`);
    }
    // Native NVMe multipath: the namespace sits in the subsystem, whose links name the controllers.
    const parts = dir.split('/');
    const at = parts.indexOf('nvme-subsystem');
    const head = parts[at + 2];
    if (at >= 0 && head !== undefined) {
      const subsystem = parts.slice(0, at + 2).join('/');
      for (const path of await source.listDir(`${subsystem}/${head}/multipath`)) {
        await copier.copy(`${subsystem}/${head}/multipath/${path}`);
      }
      for (const ctrl of await source.listDir(subsystem)) {
        if (/^nvme\d+$/.test(ctrl)) await copier.copy(`${subsystem}/${ctrl}`);
      }
    }
  }
  // The root mount's source (/dev/mapper/x is a link to ../dm-0) names the block device.
  for (const mounts of ['/proc/self/mounts', '/proc/mounts']) {
    const text = await source.readText(mounts);
    const rootSource = text
      ?.split('\n')
      .map((line) => line.split(' '))
      .find((fields) => fields[1] === '/')?.[0];
    if (rootSource?.startsWith('/dev/')) {
      await copier.copy(rootSource);
      if ((await source.entryType(rootSource)) === 'symlink') {
        const target = await source.resolve(rootSource);
        if (target !== null) await copier.touch(target);
      }
    }
  }
}

/** Default-route NICs: each netdev's `device` link and bond/bridge/VLAN `lower_*` links. */
async function captureNetDevices(source: HostFs, copier: TreeCopier): Promise<void> {
  for (const iface of await source.listDir('/sys/class/net')) {
    const dir = `/sys/class/net/${iface}`;
    await copier.copy(dir);
    for (const entry of await source.listDir(dir)) {
      if (entry === 'device' || entry.startsWith('lower_')) {
        await copier.copy(`${dir}/${entry}`);
      }
    }
  }
}

async function prepareOutDir(outDir: string): Promise<void> {
  const info = await lstat(outDir).catch(() => null);
  if (info !== null) {
    if (!info.isDirectory() || (await readdir(outDir)).length > 0) {
      throw new AgentError(
        'capture-target-not-empty',
        `capture: ${outDir} exists and is not an empty directory`,
      );
    }
  }
  await mkdir(outDir, { recursive: true });
}

/** Mirrors host paths from a HostFs into a directory, links as links. */
class TreeCopier {
  readonly result: CaptureResult = { files: 0, links: 0, directories: 0 };
  private readonly done = new Set<string>();
  /** Links met while resolving, written once resolution is done (callbacks cannot await). */
  private pendingLinks: Array<[string, string]> = [];

  constructor(
    private readonly source: HostFs,
    private readonly outDir: string,
  ) {}

  /**
   * Copies host path `p`: every symlink on the way is recreated with its own text; a directory is
   * created empty (callers name the entries they need, so nothing unlisted is ever read); a
   * file's text is copied. Returns false when `p` is absent.
   */
  async copy(p: string): Promise<boolean> {
    const type = await this.source.entryType(p);
    if (type === null) return false;
    const resolved = await this.source.resolve(p, {
      onLink: (at, target) => {
        this.pendingLinks.push([at, target]);
      },
    });
    await this.flushLinks();
    if (resolved === null) return false;
    const targetType = await this.source.entryType(resolved);
    if (targetType === 'directory') {
      await this.mkdir(resolved);
    } else if (targetType === 'file') {
      const text = await this.source.readText(resolved);
      if (text === null) return false;
      await this.write(resolved, text);
    } else if (targetType === 'other') {
      // Device nodes (/dev/vfio/*, /dev/dm-0): only their names matter to the agent.
      await this.write(resolved, '');
    }
    return true;
  }

  /** A file of the capture's own making (a reduced command line) at host path `p`. */
  async writeText(p: string, text: string): Promise<void> {
    const resolved = await this.source.resolve(p, {
      onLink: (at, target) => {
        this.pendingLinks.push([at, target]);
      },
    });
    await this.flushLinks();
    if (resolved !== null) await this.write(resolved, text);
  }

  /** An empty file standing for an entry whose presence is the fact (`reset`, device nodes). */
  async touch(p: string): Promise<void> {
    const resolved = await this.source.resolve(p, {
      onLink: (at, target) => {
        this.pendingLinks.push([at, target]);
      },
    });
    await this.flushLinks();
    if (resolved !== null) await this.write(resolved, '');
  }

  private async flushLinks(): Promise<void> {
    const links = this.pendingLinks;
    this.pendingLinks = [];
    for (const [at, target] of links) {
      if (this.done.has(at)) continue;
      this.done.add(at);
      const local = this.local(at);
      await mkdir(path.dirname(local), { recursive: true });
      await symlink(target, local).catch((error: unknown) => {
        if (!(error instanceof Error && 'code' in error && error.code === 'EEXIST')) throw error;
      });
      this.result.links += 1;
    }
  }

  private async mkdir(p: string): Promise<void> {
    if (this.done.has(p)) return;
    this.done.add(p);
    await mkdir(this.local(p), { recursive: true });
    this.result.directories += 1;
  }

  private async write(p: string, text: string): Promise<void> {
    if (this.done.has(p)) return;
    this.done.add(p);
    const local = this.local(p);
    await mkdir(path.dirname(local), { recursive: true });
    await writeFile(local, text);
    this.result.files += 1;
  }

  private local(p: string): string {
    return path.join(this.outDir, ...p.split('/').filter((part) => part !== ''));
  }
}
