/**
 * The KernelIo a local command writes through: the real sysfs on `/`, or with --simulate the
 * kernel model over a fixture tree. The model lives in a dev-only package and is imported lazily,
 * so the live path never loads it (esbuild still bundles it, which keeps `--simulate` working
 * from the shipped bundle).
 */
import type { KernelIo } from '@vfio-fleet/core';
import { SysfsKernelIo } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';

export async function kernelIoFor(
  root: string,
  simulate: boolean,
  logger: Logger,
): Promise<KernelIo> {
  if (simulate) {
    const { KernelModel } = await import('@vfio-fleet/host-fixtures');
    logger.debug({ root }, 'simulating the kernel on a fixture tree');
    return new KernelModel(root);
  }
  return new SysfsKernelIo(root);
}
