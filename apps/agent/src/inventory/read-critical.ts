/**
 * Finds the PCI devices the host itself depends on: the root disk's controller, the NIC carrying
 * the default route, and the boot VGA device while the console is on it. Handing any of them to
 * a VM takes the host down, so readiness blocks them; each lookup that fails is a problem rather
 * than a guess, because a wrong "not critical" is the dangerous answer.
 */
import type { CriticalDevice, Problem } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { deepestPciAddress } from './sysfs-values';

export interface CriticalFacts {
  critical: CriticalDevice[];
  problems: Problem[];
}

export interface CriticalInputs {
  /** Devices with their boot_vga flag, from readPciDevices. */
  devices: ReadonlyArray<{ address: string; bootVga: boolean }>;
  /** Kernel command line parameters (`root=` names the disk behind `/dev/root`). */
  cmdlineParams: ReadonlyMap<string, string>;
}

export async function readCritical(fs: HostFs, inputs: CriticalInputs): Promise<CriticalFacts> {
  const problems: Problem[] = [];
  const critical: CriticalDevice[] = [
    ...(await readRootDisk(fs, inputs.cmdlineParams, problems)),
    ...(await readDefaultRoute(fs, problems)),
    ...(await readBootVga(fs, inputs.devices)),
  ];
  return { critical, problems };
}

/** Block devices a device stacks on (dm, md, bcache): `slaves/` is how the kernel lists them. */
const MAX_STACK_DEPTH = 8;

async function readRootDisk(
  fs: HostFs,
  cmdlineParams: ReadonlyMap<string, string>,
  problems: Problem[],
): Promise<CriticalDevice[]> {
  const fromMountinfo = await rootFromMountinfo(fs);
  const mount = await rootFromMounts(fs);
  const source = fromMountinfo?.source ?? mount?.source ?? null;
  let detail = `/ on ${source ?? 'unknown device'}`;

  // The mount's device number is the most direct route to sysfs; names need /dev to agree.
  let blockPaths: string[] = [];
  if (fromMountinfo !== null && !fromMountinfo.majorMinor.startsWith('0:')) {
    const resolved = await fs.resolve(`/sys/dev/block/${fromMountinfo.majorMinor}`);
    if (resolved !== null && (await fs.exists(`/sys/dev/block/${fromMountinfo.majorMinor}`))) {
      blockPaths = [resolved];
    }
  }
  if (blockPaths.length === 0 && source !== null) {
    const name = await blockDeviceName(fs, source, cmdlineParams);
    const path = name === null ? null : await blockDevicePath(fs, name);
    if (path !== null) blockPaths = [path];
  }
  if (blockPaths.length === 0 && (source === null || source === '/dev/root')) {
    const only = await onlyRealDisk(fs);
    if (only !== null) blockPaths = [only];
  }
  if (blockPaths.length === 0) {
    problems.push({
      source: '/proc/self/mountinfo',
      message: `root disk not identified (${detail}): its controller is not protected from passthrough`,
    });
    return [];
  }
  const disk = blockPaths[0]?.split('/').at(-1);
  // `/dev/root` says nothing to an operator; name the disk it turned out to be.
  if (disk !== undefined && source === '/dev/root') detail = `${detail} (${disk})`;
  const addresses = await controllersOf(fs, blockPaths[0] ?? '', 0);
  if (addresses.size === 0) {
    problems.push({
      source: blockPaths[0] ?? '/sys/dev/block',
      message: `root filesystem (${detail}) is not on a PCI device`,
    });
  }
  return [...addresses].map((address) => ({ address, kind: 'root-disk' as const, detail }));
}

/** PCI controllers under a block device, following dm/md `slaves/` down to real disks. */
async function controllersOf(fs: HostFs, blockPath: string, depth: number): Promise<Set<string>> {
  const found = new Set<string>();
  const own = deepestPciAddress(blockPath);
  if (own !== null) found.add(own);
  else for (const address of await nvmeMultipathControllers(fs, blockPath)) found.add(address);
  if (depth >= MAX_STACK_DEPTH) return found;
  for (const slave of await fs.listDir(`${blockPath}/slaves`)) {
    const slavePath = await fs.resolve(`${blockPath}/slaves/${slave}`);
    if (slavePath === null) continue;
    for (const address of await controllersOf(fs, slavePath, depth + 1)) found.add(address);
  }
  return found;
}

/**
 * With native NVMe multipath (CONFIG_NVME_MULTIPATH=y, the default on Debian and most distro
 * kernels) a namespace's block device is not under its PCI controller but under
 * `devices/virtual/nvme-subsystem/nvme-subsysN/nvmeXnY`; the paths to it are the hidden
 * `multipath/nvmeXcYnZ` links, and the subsystem directory links each controller `nvmeY`.
 */
async function nvmeMultipathControllers(fs: HostFs, blockPath: string): Promise<string[]> {
  const parts = blockPath.split('/');
  const at = parts.indexOf('nvme-subsystem');
  const subsystem = parts[at + 1];
  const head = parts[at + 2];
  if (at < 0 || subsystem === undefined || head === undefined) return [];
  const subsystemDir = parts.slice(0, at + 2).join('/');
  const found = new Set<string>();
  const candidates = [
    ...(await fs.listDir(`${subsystemDir}/${head}/multipath`)).map(
      (p) => `${subsystemDir}/${head}/multipath/${p}`,
    ),
    ...(await fs.listDir(subsystemDir))
      .filter((name) => /^nvme\d+$/.test(name))
      .map((name) => `${subsystemDir}/${name}`),
  ];
  for (const link of candidates) {
    const resolved = await fs.resolve(link);
    const address = resolved === null ? null : deepestPciAddress(resolved);
    if (address !== null) found.add(address);
  }
  return [...found];
}

async function rootFromMountinfo(
  fs: HostFs,
): Promise<{ majorMinor: string; source: string } | null> {
  const text = await fs.readText('/proc/self/mountinfo');
  if (text === null) return null;
  let found: { majorMinor: string; source: string } | null = null;
  for (const line of text.split('\n')) {
    // id parent maj:min root mountpoint options [optional...] - fstype source superoptions
    const [left, right] = line.split(' - ');
    const fields = left?.split(' ') ?? [];
    const majorMinor = fields[2];
    if (fields[4] !== '/' || majorMinor === undefined || right === undefined) continue;
    // Later lines mount over earlier ones; the last `/` is the one in effect.
    found = { majorMinor, source: unescapeMount(right.split(' ')[1] ?? '') };
  }
  return found;
}

async function rootFromMounts(fs: HostFs): Promise<{ source: string } | null> {
  const text = (await fs.readText('/proc/self/mounts')) ?? (await fs.readText('/proc/mounts'));
  if (text === null) return null;
  let found: { source: string } | null = null;
  for (const line of text.split('\n')) {
    const [source, mountPoint] = line.split(' ');
    if (mountPoint === '/' && source !== undefined) found = { source: unescapeMount(source) };
  }
  return found;
}

/** mountinfo and mounts escape spaces and such as `\040`. */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) =>
    String.fromCharCode(Number.parseInt(octal, 8)),
  );
}

/**
 * The kernel block device name behind a mount source. `/dev/root` is the kernel's alias for the
 * `root=` device; `/dev/mapper/x` and `/dev/disk/by-*` are links to the real node.
 */
async function blockDeviceName(
  fs: HostFs,
  source: string,
  cmdlineParams: ReadonlyMap<string, string>,
): Promise<string | null> {
  let device = source;
  if (device === '/dev/root') {
    const root = cmdlineParams.get('root');
    if (root === undefined || !root.startsWith('/dev/')) return null;
    device = root;
  }
  if (!device.startsWith('/dev/')) return null;
  const resolved = (await fs.resolve(device)) ?? device;
  return resolved.split('/').at(-1) ?? null;
}

async function blockDevicePath(fs: HostFs, name: string): Promise<string | null> {
  // /sys/block lists whole disks only, but older kernels and snapshots have just that.
  for (const dir of ['/sys/class/block', '/sys/block']) {
    if (await fs.exists(`${dir}/${name}`)) return fs.resolve(`${dir}/${name}`);
  }
  return null;
}

/** Virtual block devices never hold a host's root directly without a disk beneath. */
const VIRTUAL_DISK = /^(loop|ram|zram|nbd|sr|fd|dm-|md)\d*/;

/** Last resort for `/dev/root` without `root=`: when the host has exactly one disk, that's it. */
async function onlyRealDisk(fs: HostFs): Promise<string | null> {
  let names = await fs.listDir('/sys/class/block');
  if (names.length === 0) names = await fs.listDir('/sys/block');
  const disks: string[] = [];
  for (const name of names) {
    if (VIRTUAL_DISK.test(name)) continue;
    const path = await blockDevicePath(fs, name);
    // Partitions (sda1, nvme0n1p1) sit inside their disk's directory; count only whole disks.
    const parent = path?.split('/').at(-2);
    if (path === null || (parent !== undefined && names.includes(parent))) continue;
    if (await fs.exists(`${path}/partition`)) continue;
    if (deepestPciAddress(path) !== null) disks.push(path);
  }
  return disks.length === 1 ? (disks[0] ?? null) : null;
}

const RTF_UP = 0x1;
/** Unreachable/prohibit routes (`::/0` on `lo`) are not a way out. */
const RTF_REJECT = 0x200;

async function readDefaultRoute(fs: HostFs, problems: Problem[]): Promise<CriticalDevice[]> {
  const interfaces = new Set<string>();
  const v4 = await fs.readText('/proc/net/route');
  for (const line of v4?.split('\n').slice(1) ?? []) {
    const fields = line.trim().split(/\s+/);
    const [iface, destination, , flagsHex] = fields;
    const mask = fields[7];
    if (iface === undefined || flagsHex === undefined) continue;
    const flags = Number.parseInt(flagsHex, 16);
    if (destination === '00000000' && mask === '00000000' && isUsableRoute(flags))
      interfaces.add(iface);
  }
  const v6 = await fs.readText('/proc/net/ipv6_route');
  for (const line of v6?.split('\n') ?? []) {
    const fields = line.trim().split(/\s+/);
    const [destination, prefixLength] = fields;
    const flagsHex = fields[8];
    const iface = fields[9];
    if (iface === undefined || flagsHex === undefined || iface === 'lo') continue;
    if (/^0{32}$/.test(destination ?? '') && prefixLength === '00') {
      if (isUsableRoute(Number.parseInt(flagsHex, 16))) interfaces.add(iface);
    }
  }
  if (v4 === null && v6 === null) {
    problems.push({
      source: '/proc/net/route',
      message: 'routing tables unreadable: the default-route NIC is not protected from passthrough',
    });
  }
  const critical: CriticalDevice[] = [];
  for (const iface of [...interfaces].sort()) {
    const found = await nicsOf(fs, iface, new Set());
    if (found.length === 0) {
      problems.push({
        source: `/sys/class/net/${iface}`,
        message: `default route via ${iface}, which is not on a PCI device`,
      });
    }
    for (const { address, via } of found) {
      const detail =
        via === iface ? `default route via ${iface}` : `default route via ${iface} (${via})`;
      critical.push({ address, kind: 'default-route', detail });
    }
  }
  return critical;
}

function isUsableRoute(flags: number): boolean {
  return (flags & RTF_UP) !== 0 && (flags & RTF_REJECT) === 0;
}

/** PCI NICs under a netdev, through bond/bridge/VLAN `lower_*` links. */
async function nicsOf(
  fs: HostFs,
  iface: string,
  seen: Set<string>,
): Promise<Array<{ address: string; via: string }>> {
  if (seen.has(iface)) return [];
  seen.add(iface);
  const dir = `/sys/class/net/${iface}`;
  if (await fs.exists(`${dir}/device`)) {
    const address = deepestPciAddress((await fs.resolve(`${dir}/device`)) ?? '');
    if (address !== null) return [{ address, via: iface }];
  }
  const found: Array<{ address: string; via: string }> = [];
  for (const entry of await fs.listDir(dir)) {
    if (!entry.startsWith('lower_')) continue;
    found.push(...(await nicsOf(fs, entry.slice('lower_'.length), seen)));
  }
  return found;
}

/**
 * The boot VGA device matters while a console is drawn on it: unbinding it blanks the only local
 * console (and with fbcon on efifb/simplefb, can hang the host).
 */
async function readBootVga(
  fs: HostFs,
  devices: CriticalInputs['devices'],
): Promise<CriticalDevice[]> {
  const critical = new Map<string, string>();
  for (const fb of await fs.listDir('/sys/class/graphics')) {
    if (!/^fb\d+$/.test(fb) || !(await fs.exists(`/sys/class/graphics/${fb}/device`))) continue;
    const address = deepestPciAddress((await fs.resolve(`/sys/class/graphics/${fb}/device`)) ?? '');
    if (address !== null) critical.set(address, `framebuffer ${fb} on it`);
  }
  if (await fbconBound(fs)) {
    for (const device of devices) {
      if (device.bootVga && !critical.has(device.address)) {
        critical.set(device.address, 'boot VGA with the fbcon console bound');
      }
    }
  }
  return [...critical].map(([address, detail]) => ({
    address,
    kind: 'boot-vga-console' as const,
    detail,
  }));
}

async function fbconBound(fs: HostFs): Promise<boolean> {
  for (const vtcon of await fs.listDir('/sys/class/vtconsole')) {
    const dir = `/sys/class/vtconsole/${vtcon}`;
    if ((await fs.readAttr(`${dir}/bind`)) !== '1') continue;
    if ((await fs.readAttr(`${dir}/name`))?.includes('frame buffer device')) return true;
  }
  return false;
}
