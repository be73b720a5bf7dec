/**
 * Users of vfio devices in the kernel model, as the shared notes measured them on 6.1: a holder
 * (QEMU, or the test's own static helper) opens the group, sets a container and takes a device
 * fd. While any device fd is open the device's `enable` reads 1 and the holder's /proc shows
 * `/dev/vfio/<group>`, `/dev/vfio/vfio` and `anon_inode:[vfio-device]`.
 *
 * An unbind of a held device (its driver's `unbind`, the device's `remove`) does not fail: the
 * `driver` link goes at once (driver_sysfs_remove runs before the bus's remove()), then
 * vfio_unregister_group_dev waits until the last fd is closed, without limit when the holder
 * registered no device-request eventfd; the write completes right after. The model waits the
 * same way, and anything else the model is asked to do to that device waits behind it, as on the
 * device lock, and reads of its lock-taking attributes hang (kernel-model-device-lock); an
 * `echo 0 > sriov_numvfs` waits the same way for a held VF (kernel-model-sriov). While a device
 * is held, no driver that does its own DMA binds another member of its group (EBUSY). Not imitated:
 * QEMU's device-request eventfd (the guest being asked to unplug).
 */
import type { DeviceState, SysTree } from './kernel-model-tree';

/** The process a test lets hold a device: what its /proc shows. */
export interface HolderProcess {
  pid: number;
  comm: string;
  cmdline: string[];
  /** Group and container closed once the device fd is taken: only the anonymous fd is left. */
  deviceFdOnly?: boolean;
}

interface Hold {
  fds: number;
  released: Promise<void>;
  resolve: () => void;
}

/** Device fds open per address, in one kernel (shared by every model opened on the root). */
export class DeviceHolds {
  private readonly holds = new Map<string, Hold>();
  /** Holds per pid: its /proc directory goes when its last one is released. */
  private readonly pids = new Map<number, number>();

  /** Every held address. */
  held(): string[] {
    return [...this.holds.keys()];
  }

  openPid(pid: number): void {
    this.pids.set(pid, (this.pids.get(pid) ?? 0) + 1);
  }

  /** True when the pid holds nothing any more. */
  closePid(pid: number): boolean {
    const left = (this.pids.get(pid) ?? 1) - 1;
    if (left > 0) this.pids.set(pid, left);
    else this.pids.delete(pid);
    return left <= 0;
  }

  isHeld(address: string): boolean {
    return this.holds.has(address);
  }

  /** Resolves once the device's last fd is closed (at once when it is free). */
  whenReleased(address: string): Promise<void> {
    return this.holds.get(address)?.released ?? Promise.resolve();
  }

  open(address: string): void {
    const hold = this.holds.get(address);
    if (hold !== undefined) {
      hold.fds += 1;
      return;
    }
    let resolve: () => void = () => undefined;
    const released = new Promise<void>((r) => {
      resolve = r;
    });
    this.holds.set(address, { fds: 1, released, resolve });
  }

  /** Closes one fd; true when it was the last. */
  close(address: string): boolean {
    const hold = this.holds.get(address);
    if (hold === undefined) return false;
    hold.fds -= 1;
    if (hold.fds > 0) return false;
    this.holds.delete(address);
    hold.resolve();
    return true;
  }
}

/** The fd links QEMU's open leaves: group, container, device. Numbered from 3, after stdio. */
export async function writeHolderProc(
  tree: SysTree,
  process: HolderProcess,
  group: number,
): Promise<void> {
  const dir = `proc/${process.pid}`;
  await tree.out.attr(`${dir}/comm`, process.comm);
  await tree.out.file(`${dir}/cmdline`, process.cmdline.map((arg) => `${arg}\0`).join(''));
  const fds = await tree.list(`${dir}/fd`);
  let next = Math.max(2, ...fds.map(Number).filter((n) => Number.isInteger(n))) + 1;
  const opened = process.deviceFdOnly
    ? ['anon_inode:[vfio-device]']
    : [`/dev/vfio/${group}`, '/dev/vfio/vfio', 'anon_inode:[vfio-device]'];
  for (const target of opened) {
    await tree.out.rawLink(`${dir}/fd/${next}`, target);
    next += 1;
  }
}

/** The process exits: its /proc directory goes with it. */
export async function removeHolderProc(tree: SysTree, pid: number): Promise<void> {
  await tree.remove(`proc/${pid}`);
}

/** Held devices a `remove` of `top` takes with it: itself, what sits below it, its VFs. */
export async function heldUnder(
  tree: SysTree,
  holds: DeviceHolds,
  top: DeviceState,
): Promise<DeviceState[]> {
  const found: DeviceState[] = [];
  for (const address of holds.held()) {
    const device = await tree.device(address);
    if (device === null) continue;
    const below = device.path === top.path || device.path.startsWith(`${top.path}/`);
    if (below || device.physfn === top.address) found.push(device);
  }
  return found;
}
