/**
 * The KernelIo a local command writes through: the real sysfs on `/`, or with --simulate the
 * kernel model over a fixture tree. The model lives in a dev-only package and is imported lazily,
 * so the live path never loads it (esbuild still bundles it, which keeps `--simulate` working
 * from the shipped bundle).
 */
import { KERNEL_ERRNOS, type KernelIo } from '@vfio-fleet/core';
import type { KernelFault } from '@vfio-fleet/host-fixtures';
import { AgentError } from '../errors';
import { SysfsKernelIo } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';

export async function kernelIoFor(
  root: string,
  simulate: boolean,
  logger: Logger,
  faults: readonly KernelFault[] = [],
): Promise<KernelIo> {
  if (simulate) {
    const { KernelModel } = await import('@vfio-fleet/host-fixtures');
    logger.debug({ root, faults }, 'simulating the kernel on a fixture tree');
    return new KernelModel(root, { faults: [...faults] });
  }
  return new SysfsKernelIo(root);
}

export const SIMULATE_FAULT_FORMS =
  'write-fails:PATH:ERRNO, bind-refuses:DRIVER, probe-hangs:ADDRESS, modprobe-fails:MODULE';

/**
 * `--simulate-fault` specs, so an operator can watch a rollback on a fixture before trusting one on
 * a host (and the CLI's exit codes 4 and 5 can be tested end to end). The errno is the last field
 * because sysfs paths contain colons (`0000:17:00.0`).
 */
export function parseSimulatedFault(spec: string): KernelFault {
  const colon = spec.indexOf(':');
  const kind = colon < 0 ? spec : spec.slice(0, colon);
  const arg = colon < 0 ? '' : spec.slice(colon + 1);
  const bad = (why: string) =>
    new AgentError(
      'usage',
      `--simulate-fault ${JSON.stringify(spec)}: ${why} (forms: ${SIMULATE_FAULT_FORMS})`,
    );
  if (arg === '') throw bad('missing its argument');
  switch (kind) {
    case 'write-fails': {
      const last = arg.lastIndexOf(':');
      const errno = KERNEL_ERRNOS.find((e) => e === arg.slice(last + 1));
      if (last < 0 || errno === undefined) throw bad('expected PATH:ERRNO with a known errno');
      return { kind, path: arg.slice(0, last), errno };
    }
    case 'bind-refuses':
      return { kind, driver: arg };
    case 'probe-hangs':
      return { kind, address: arg };
    case 'modprobe-fails':
      return { kind, module: arg };
    default:
      throw bad(`unknown kind ${JSON.stringify(kind)}`);
  }
}
