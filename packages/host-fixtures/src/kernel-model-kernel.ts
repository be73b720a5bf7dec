/**
 * What every part of the kernel model shares: the faults a test injects, errno helpers, and the
 * per-root kernel state (the lock the kernel's device and driver locks stand for, probes in
 * flight, device fds held), so models opened on one root behave as one kernel.
 */
import path from 'node:path';
import { type KernelErrno, KernelIoError } from '@vfio-fleet/core';
import { LockedFiles } from './kernel-model-device-lock';
import { DeviceHolds } from './kernel-model-holders';

export type KernelFault =
  /** The write throws `errno` and changes nothing; `times` failures, then it works (default: always). */
  | { kind: 'write-fails'; path: string | RegExp; errno: KernelErrno; times?: number }
  /** The driver's probe() fails (default EIO): bind answers the errno, drivers_probe succeeds unbound. */
  | { kind: 'bind-refuses'; driver: string; errno?: KernelErrno }
  /** Probing this device does not return for `probeHangMs` (default: never). */
  | { kind: 'probe-hangs'; address: string }
  /** modprobe cannot insert this module (default EIO), even as another module's dependency. */
  | { kind: 'modprobe-fails'; module: string; errno?: KernelErrno };

export const STRERROR: Record<KernelErrno, string> = {
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
  ERANGE: 'Numerical result out of range',
  EUNKNOWN: 'Unknown error',
};

export function fail(errno: KernelErrno, target: string): KernelIoError {
  return new KernelIoError(errno, target, `${target}: ${STRERROR[errno]}`);
}

/** sysfs_streq: equal up to one trailing newline on either side. */
export function sysfsValue(value: string): string {
  return value.endsWith('\n') ? value.slice(0, -1) : value;
}

/** kstrtobool: 1/0, y/n, on/off (case-insensitive first letters), as sriov_drivers_autoprobe takes. */
export function parseBool(value: string): boolean | null {
  const v = sysfsValue(value).toLowerCase();
  if (/^(1|y|yes|on)$/.test(v)) return true;
  if (/^(0|n|no|off)$/.test(v)) return false;
  return null;
}

export function isBridge(classCode: string): boolean {
  // PCI-to-PCI and CardBus bridges: header types vfio-pci refuses.
  return (
    classCode.startsWith('0604') || classCode.startsWith('0609') || classCode.startsWith('0607')
  );
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
export class Held {
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
export interface KernelState {
  mutex: Mutex;
  /** Devices inside a hung probe or a blocked remove: anything else touching them waits. */
  probing: Map<string, Promise<void>>;
  /** Device fds users hold (kernel-model-holders). */
  holds: DeviceHolds;
  /** Attributes that hang for readers while a blocked write holds their device's lock. */
  locked: LockedFiles;
  /** Whether a captured tree has been given its write-only files. */
  completed: boolean;
}

const KERNELS = new Map<string, KernelState>();

/**
 * One kernel per tree: models opened on the same root (an executor's, a test's hotplug()) share
 * its locks and its in-flight probes, as everything on one host shares one kernel.
 */
export function kernelFor(root: string): KernelState {
  const key = path.resolve(root);
  let kernel = KERNELS.get(key);
  if (kernel === undefined) {
    kernel = {
      mutex: new Mutex(),
      probing: new Map(),
      holds: new DeviceHolds(),
      locked: new LockedFiles(key),
      completed: false,
    };
    KERNELS.set(key, kernel);
  }
  return kernel;
}
