/**
 * Re-applies the bindings kept across reboots (./bindings-file): `vfio-fleet-agent run` calls
 * reapplyPersistedBindings at start, before anything else touches the host.
 */
import { collectHost } from '../inventory/collect';
import { linkBasename } from '../inventory/sysfs-values';
import { lockedReaderFor } from '../kernel/sysfs-kernel-io';
import { type PersistedBinding, readPersistedBindings } from './bindings-file';
import { type ExecutorDeps, type JobOutcome, RebindExecutor } from './executor';

export type ReapplyAction =
  /** Already on its recorded driver: left alone. */
  | 'already-bound'
  /** No such device now (unplugged, renumbered): nothing to do. */
  | 'absent'
  /** Another card sits at that address now: never taken from the host. */
  | 'device-changed'
  | 'bound'
  | 'refused'
  | 'failed';

export interface ReapplyResult {
  address: string;
  action: ReapplyAction;
  message: string;
  outcome: JobOutcome | null;
}

/**
 * Re-binds every persisted device that is not on its recorded driver, one job per device (its
 * whole IOMMU group moves, as with `bind`). Devices without a record are never touched, and
 * neither is a record whose address now holds a different vendor:device.
 *
 * A record is a decision already made: a local root operator's `bind --persist`, or a server job
 * that asked to keep a binding while this agent allowed rebinding. It restores that state, so it
 * is applied whatever `deps.allowRebind` says now: that flag gates new jobs from a server.
 */
export async function reapplyPersistedBindings(deps: ExecutorDeps): Promise<ReapplyResult[]> {
  const bindings = await readPersistedBindings(deps.stateDir);
  if (bindings.length === 0) return [];
  const executor = new RebindExecutor({ ...deps, allowRebind: true });
  const snapshot = await collectHost(deps.fs, {
    pciIdsPath: deps.pciIdsPath ?? null,
    logger: deps.logger,
    lockedRead: lockedReaderFor(deps.io),
  });
  const results: ReapplyResult[] = [];
  for (const binding of bindings) {
    const device = snapshot.devices.find((d) => d.address === binding.address);
    if (device === undefined) {
      results.push(result(binding, 'absent', `${binding.address} is not on this host now`));
      continue;
    }
    if (device.vendorId !== binding.vendorId || device.deviceId !== binding.deviceId) {
      results.push(
        result(
          binding,
          'device-changed',
          `${binding.address} is now ${device.vendorId}:${device.deviceId}, not the persisted ${binding.vendorId}:${binding.deviceId}: left to the host`,
        ),
      );
      continue;
    }
    // Read now, not from the snapshot: an earlier record's job may have moved this device with
    // its group already.
    const driver = linkBasename(
      await deps.fs.readLink(`/sys/bus/pci/devices/${binding.address}/driver`),
    );
    if (driver === binding.driver) {
      results.push(result(binding, 'already-bound', `${binding.address} is on ${driver}`));
      continue;
    }
    const jobId = `persist-${binding.address.replaceAll(':', '-')}-${(deps.now?.() ?? new Date()).getTime()}`;
    const outcome = await executor.execute({
      jobId,
      address: binding.address,
      target: 'vfio',
      force: binding.force,
      // The record is already there; a second write would only change its date.
      persist: false,
    });
    const action: ReapplyAction =
      outcome.status === 'succeeded'
        ? 'bound'
        : outcome.status === 'refused'
          ? 'refused'
          : 'failed';
    const message =
      outcome.status === 'succeeded'
        ? `${binding.address} bound to ${binding.driver} again`
        : `${binding.address}: ${outcome.status}: ${outcome.reason?.message ?? ''}`;
    deps.logger.info({ address: binding.address, action, jobId }, 'persisted binding reapplied');
    results.push({ address: binding.address, action, message, outcome });
  }
  return results;
}

function result(binding: PersistedBinding, action: ReapplyAction, message: string): ReapplyResult {
  return { address: binding.address, action, message, outcome: null };
}
