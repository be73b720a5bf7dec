/**
 * Which vfio-bound devices a user holds, and who. The kernel says *whether* exactly: a vfio
 * device's `enable` reads 1 while a device fd is open (pci_enable_device on open), 0 when idle or
 * when only its group is open. *Who* takes /proc: a holder has `/dev/vfio/<group>` (the legacy
 * group), `/dev/vfio/devices/vfio<N>` (the 6.6+ device cdev) or `anon_inode:[vfio-device]` open.
 * A device fd kept after its group fd was closed is anonymous and names no device, so such a
 * device is in use with an unknown holder. /proc is only walked when some device reads 1.
 *
 * Processes exit mid-scan, /proc may be hidden (another pid namespace, hidepid): every missing
 * file is a state, and `inUse` still comes from `enable`.
 */
import { type DeviceHolder, isVfioDriverName, type Problem } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import { argv0Basename, splitCmdline, vmNameOf } from './holder-command-line';
import { PCI_DEVICES_DIR } from './read-pci-devices';

/** A host has thousands of processes: past these the scan stops and says so. */
export const MAX_PROC_PIDS = 65_536;
export const MAX_PROC_FDS = 262_144;
/** A command line can be megabytes; a VMM names its VM within the first few KiB. */
export const MAX_CMDLINE_BYTES = 64 * 1024;
const MAX_COMMAND = 64;

const GROUP_FD = /^\/dev\/vfio\/(\d+)$/;
const CDEV_FD = /^\/dev\/vfio\/devices\/(vfio\d+)$/;
const ANON_DEVICE_FD = 'anon_inode:[vfio-device]';

/** The part of a device the holder scan needs. */
export interface HolderCandidate {
  address: string;
  driver: string | null;
  iommuGroup: number | null;
}

export interface DeviceUse {
  inUse: boolean;
  holder: DeviceHolder | null;
}

export interface HoldersResult {
  /** Every vfio-bound device read, by address; devices not listed are not in use. */
  uses: Map<string, DeviceUse>;
  problems: Problem[];
}

/** What one process has open of vfio. */
export interface ProcessVfio {
  pid: number;
  groups: Set<number>;
  cdevs: Set<string>;
  anonDevices: number;
  /** Names in /proc/<pid>/fd of those vfio fds. */
  fds: string[];
}

/** Whether each vfio-bound device is held (`enable` reads 1); cheap: one read per such device. */
export async function readEnabled(
  fs: HostFs,
  devices: readonly HolderCandidate[],
): Promise<Map<string, boolean>> {
  const enabled = new Map<string, boolean>();
  for (const device of devices) {
    if (device.driver === null || !isVfioDriverName(device.driver)) continue;
    enabled.set(device.address, (await fs.readAttr(`${deviceDir(device.address)}/enable`)) === '1');
  }
  return enabled;
}

/**
 * The last walk's answer, reused while the same devices are held and each named holder still has
 * their group (or cdev) open: a daemon rescans every few seconds, and a host has thousands of
 * fds. Anonymous holders cannot be re-checked, so an answer is trusted for `maxAgeMs` at most.
 */
export class HolderCache {
  entry: { key: string; at: number; result: HoldersResult } | null = null;

  constructor(
    readonly maxAgeMs = 60_000,
    readonly now: () => number = Date.now,
  ) {}
}

export async function readHolders(
  fs: HostFs,
  devices: readonly HolderCandidate[],
  cache: HolderCache | null = null,
): Promise<HoldersResult> {
  const enabled = await readEnabled(fs, devices);
  const uses = new Map<string, DeviceUse>();
  for (const [address, inUse] of enabled) uses.set(address, { inUse, holder: null });
  const held = devices.filter((d) => enabled.get(d.address) === true);
  if (held.length === 0) return { uses, problems: [] };

  const cdevOf = new Map<string, string>();
  for (const device of held) {
    const cdev = (await fs.listDir(`${deviceDir(device.address)}/vfio-dev`)).find((n) =>
      /^vfio\d+$/.test(n),
    );
    if (cdev !== undefined) cdevOf.set(device.address, cdev);
  }
  const key = held
    .map((d) => `${d.address}@${d.iommuGroup ?? '-'}/${cdevOf.get(d.address) ?? '-'}`)
    .join(',');
  const cached = cache?.entry;
  if (
    cache !== null &&
    cached !== undefined &&
    cached !== null &&
    cached.key === key &&
    cache.now() - cached.at < cache.maxAgeMs &&
    (await stillHeld(fs, held, cdevOf, cached.result.uses))
  ) {
    for (const device of held) {
      uses.set(
        device.address,
        cached.result.uses.get(device.address) ?? { inUse: true, holder: null },
      );
    }
    return { uses, problems: cached.result.problems };
  }

  const scan = await scanProcesses(fs);
  const names = new Map<number, DeviceHolder | null>();
  for (const device of held) {
    const owner = ownerOf(device, cdevOf.get(device.address) ?? null, scan.processes);
    if (owner === null) continue;
    if (!names.has(owner.pid)) names.set(owner.pid, await describeProcess(fs, owner.pid));
    uses.set(device.address, { inUse: true, holder: names.get(owner.pid) ?? null });
  }
  const result = { uses, problems: scan.problems };
  if (cache !== null) cache.entry = { key, at: cache.now(), result };
  return result;
}

/** Whether every holder named before still has its device's group or cdev open: one fd dir each. */
async function stillHeld(
  fs: HostFs,
  held: readonly HolderCandidate[],
  cdevOf: ReadonlyMap<string, string>,
  before: ReadonlyMap<string, DeviceUse>,
): Promise<boolean> {
  const targets = new Map<number, Set<string>>();
  for (const device of held) {
    const pid = before.get(device.address)?.holder?.pid;
    if (pid === undefined) continue;
    let open = targets.get(pid);
    if (open === undefined) {
      open = new Set();
      for (const fd of await fs.listDir(`/proc/${pid}/fd`)) {
        const target = await fs.readLink(`/proc/${pid}/fd/${fd}`);
        if (target !== null) open.add(target);
      }
      targets.set(pid, open);
    }
    const cdev = cdevOf.get(device.address);
    const group = device.iommuGroup;
    const holds =
      (cdev !== undefined && open.has(`/dev/vfio/devices/${cdev}`)) ||
      (group !== null && open.has(`/dev/vfio/${group}`));
    if (!holds) return false;
  }
  return true;
}

/**
 * The process holding `device`: one with its cdev open, else one with its group open; among
 * several, one that also has a device fd (a process with only the group open holds nothing),
 * then the lowest pid, so the answer is stable between scans.
 */
function ownerOf(
  device: HolderCandidate,
  cdev: string | null,
  processes: readonly ProcessVfio[],
): ProcessVfio | null {
  const byCdev = cdev === null ? undefined : processes.find((p) => p.cdevs.has(cdev));
  if (byCdev !== undefined) return byCdev;
  const group = device.iommuGroup;
  if (group === null) return null;
  const byGroup = processes.filter((p) => p.groups.has(group));
  return byGroup.find((p) => p.anonDevices > 0) ?? byGroup[0] ?? null;
}

/** Every process with a vfio fd open, pids ascending; each fd directory read once. */
export async function scanProcesses(
  fs: HostFs,
): Promise<{ processes: ProcessVfio[]; problems: Problem[] }> {
  const problems: Problem[] = [];
  const pids = (await fs.listDir('/proc'))
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .sort((a, b) => a - b);
  if (pids.length === 0) {
    problems.push({
      source: '/proc',
      message:
        'a vfio device is in use but /proc lists no process (another pid namespace?): its holder is unknown',
    });
  }
  if (pids.length > MAX_PROC_PIDS) {
    problems.push({
      source: '/proc',
      message: `${pids.length} processes: only the first ${MAX_PROC_PIDS} were searched for vfio holders`,
    });
  }
  const processes: ProcessVfio[] = [];
  let fdsRead = 0;
  for (const pid of pids.slice(0, MAX_PROC_PIDS)) {
    if (fdsRead >= MAX_PROC_FDS) {
      problems.push({
        source: '/proc',
        message: `stopped searching for vfio holders after ${MAX_PROC_FDS} open files (at pid ${pid})`,
      });
      break;
    }
    const found: ProcessVfio = {
      pid,
      groups: new Set(),
      cdevs: new Set(),
      anonDevices: 0,
      fds: [],
    };
    for (const fd of await fs.listDir(`/proc/${pid}/fd`)) {
      fdsRead += 1;
      // A process that exits now leaves links that no longer read: simply nothing held.
      const target = await fs.readLink(`/proc/${pid}/fd/${fd}`);
      if (target === null) continue;
      const group = GROUP_FD.exec(target)?.[1];
      const cdev = CDEV_FD.exec(target)?.[1];
      if (group !== undefined) found.groups.add(Number(group));
      else if (cdev !== undefined) found.cdevs.add(cdev);
      else if (target === ANON_DEVICE_FD) found.anonDevices += 1;
      else continue;
      found.fds.push(fd);
    }
    if (found.fds.length > 0) processes.push(found);
  }
  return { processes, problems };
}

/** pid, command (comm, else argv[0]'s basename) and VM name; null when the process is gone. */
async function describeProcess(fs: HostFs, pid: number): Promise<DeviceHolder | null> {
  const comm = await fs.readAttr(`/proc/${pid}/comm`);
  const cmdline = await fs.readHead(`/proc/${pid}/cmdline`, MAX_CMDLINE_BYTES);
  const argv = cmdline === null ? [] : splitCmdline(cmdline);
  const command = comm !== null && comm !== '' ? comm : argv0Basename(argv);
  if (command === null) return null;
  return { pid, command: command.slice(0, MAX_COMMAND), vm: vmNameOf(argv) };
}

function deviceDir(address: string): string {
  return `${PCI_DEVICES_DIR}/${address}`;
}
