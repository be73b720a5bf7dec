/**
 * The one narrow interface through which the agent changes a host: sysfs attribute writes and
 * modprobe. The real implementation writes under the agent's root; the kernel model in
 * @vfio-fleet/host-fixtures implements the same interface over a fixture tree, so the executor is
 * tested against the behaviour of Linux's driver core without root or hardware.
 */

/** errno names the driver core answers with (Documentation/ABI/testing/sysfs-bus-pci). */
export const KERNEL_ERRNOS = [
  'EBUSY',
  'ENODEV',
  'EINVAL',
  'ENOENT',
  'EIO',
  'EPERM',
  'EACCES',
  'ETIMEDOUT',
  'EEXIST',
  'ENOMEM',
  // Not the driver core's: sysfs mounted read-only for the agent (a systemd sandbox without the
  // unit's ReadWritePaths=, a container's read-only /sys).
  'EROFS',
  // sriov_numvfs above sriov_totalvfs (iov.c sriov_numvfs_store).
  'ERANGE',
  'EUNKNOWN',
] as const;

export type KernelErrno = (typeof KERNEL_ERRNOS)[number];

export function isKernelErrno(code: string | null | undefined): code is KernelErrno {
  return KERNEL_ERRNOS.some((known) => known === code);
}

/** A write or modprobe the kernel refused: which one, and the kernel's error. */
export class KernelIoError extends Error {
  override readonly name = 'KernelIoError';

  constructor(
    readonly errno: KernelErrno,
    /** The sysfs path written, or `modprobe <module>`. */
    readonly target: string,
    message: string,
  ) {
    super(message);
  }
}

export interface KernelIo {
  /** Writes `value` to the sysfs attribute at `path` (absolute, as on the host: `/sys/...`). */
  write(path: string, value: string): Promise<void>;
  /** Loads a module (and what it depends on); resolves when its drivers are registered. */
  modprobe(module: string): Promise<void>;
}
