/**
 * Bindings an operator asked to keep across reboots (`bind --persist`), in
 * `<stateDir>/bindings.json`. A sysfs rebind lasts until the next boot; `vfio-fleet-agent run`
 * calls reapplyPersistedBindings at start to put them back.
 *
 * Each record keeps the device's vendor:device: a slot whose card was swapped must not have the
 * new card taken from the host because the old one was passed through.
 */
import path from 'node:path';
import { comparePciAddresses, pciAddressSchema } from '@vfio-fleet/core';
import { z } from 'zod';
import { collectHost } from '../inventory/collect';
import { linkBasename } from '../inventory/sysfs-values';
import { lockedReaderFor } from '../kernel/sysfs-kernel-io';
import { type ExecutorDeps, type JobOutcome, RebindExecutor } from './executor';
import { readOptional, writeFileAtomic } from './state-files';

export const BINDINGS_FILE = 'bindings.json';

const hex4 = z.string().regex(/^[0-9a-f]{4}$/);

export const persistedBindingSchema = z.object({
  address: pciAddressSchema,
  vendorId: hex4,
  deviceId: hex4,
  /** The vfio driver the device was bound to (`vfio-pci`, `mlx5_vfio_pci`...). */
  driver: z.string().regex(/^[A-Za-z0-9_.:+-]{1,64}$/),
  /** The bind was forced past warnings; reapplying it needs the same. */
  force: z.boolean(),
  persistedAt: z.string(),
});
export type PersistedBinding = z.infer<typeof persistedBindingSchema>;

const bindingsFileSchema = z.object({
  version: z.literal(1),
  bindings: z.array(persistedBindingSchema),
});

export function bindingsPath(stateDir: string): string {
  return path.join(stateDir, BINDINGS_FILE);
}

export async function readPersistedBindings(stateDir: string): Promise<PersistedBinding[]> {
  const file = bindingsPath(stateDir);
  const text = await readOptional(file);
  if (text === null) return [];
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(
      `${file} is not JSON: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  const parsed = bindingsFileSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${file} is invalid: ${parsed.error.message}`);
  return parsed.data.bindings;
}

async function writeBindings(stateDir: string, bindings: PersistedBinding[]): Promise<void> {
  const sorted = [...bindings].sort((a, b) => comparePciAddresses(a.address, b.address));
  const body = { version: 1, bindings: sorted } satisfies z.infer<typeof bindingsFileSchema>;
  await writeFileAtomic(bindingsPath(stateDir), `${JSON.stringify(body, null, 2)}\n`);
}

/** Adds or replaces the records for these devices. */
export async function persistBindings(
  stateDir: string,
  records: readonly PersistedBinding[],
): Promise<void> {
  const addresses = new Set(records.map((r) => r.address));
  const kept = (await readPersistedBindings(stateDir)).filter((b) => !addresses.has(b.address));
  await writeBindings(stateDir, [...kept, ...records]);
}

/** Drops the records of these devices; returns the ones it dropped. */
export async function forgetBindings(
  stateDir: string,
  addresses: readonly string[],
): Promise<PersistedBinding[]> {
  const all = await readPersistedBindings(stateDir);
  const dropped = all.filter((b) => addresses.includes(b.address));
  if (dropped.length > 0) {
    await writeBindings(
      stateDir,
      all.filter((b) => !addresses.includes(b.address)),
    );
  }
  return dropped;
}

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
 * Persisted bindings are a local root operator's explicit decision (`bind --persist`), so they are
 * applied whatever `deps.allowRebind` says: that flag gates jobs from a server.
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
