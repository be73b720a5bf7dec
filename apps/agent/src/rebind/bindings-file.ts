/**
 * Bindings an operator asked to keep across reboots (`bind --persist`, a dashboard job with "keep
 * across reboots"), in `<stateDir>/bindings.json`. A sysfs rebind lasts until the next boot;
 * `vfio-fleet-agent run` re-applies them at start (./persist).
 *
 * Each record keeps the device's vendor:device: a slot whose card was swapped must not have the
 * new card taken from the host because the old one was passed through.
 */
import path from 'node:path';
import {
  comparePciAddresses,
  isVfioDriverName,
  type JobPersistence,
  pciAddressSchema,
} from '@vfio-fleet/core';
import { z } from 'zod';
import type { DeviceBinding } from './job-store';
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

/** A succeeded job's change to bindings.json: what it asked for, and what the target implies. */
export interface PersistenceRequest {
  target: 'vfio' | 'host';
  persist: boolean;
  force: boolean;
  /** The group's devices as the job left them. */
  after: readonly DeviceBinding[];
  devices: ReadonlyArray<{ address: string; vendorId: string; deviceId: string }>;
  at: string;
}

/**
 * A move to vfio asked to persist records every device of the group now on a vfio driver (the
 * whole group comes back at start); a restore forgets the group's records, since a leftover one
 * would bind it again at the next agent start. Never throws: the rebind itself stands, and a
 * record that could not be written is reported as `error` for the operator to act on.
 */
export async function applyPersistence(
  stateDir: string,
  request: PersistenceRequest,
): Promise<JobPersistence | null> {
  const { target, after } = request;
  if (target === 'vfio' && !request.persist) return null;
  try {
    if (target === 'host') {
      const dropped = await forgetBindings(
        stateDir,
        after.map((b) => b.address),
      );
      if (dropped.length === 0) return null;
      const forgotten = dropped.map((b) => ({ address: b.address, driver: b.driver }));
      return { kept: [], forgotten, error: null };
    }
    const records = after.flatMap((binding): PersistedBinding[] => {
      const device = request.devices.find((d) => d.address === binding.address);
      if (device === undefined || binding.driver === null || !isVfioDriverName(binding.driver)) {
        return [];
      }
      const { vendorId, deviceId } = device;
      const { address, driver } = binding;
      return [
        { address, vendorId, deviceId, driver, force: request.force, persistedAt: request.at },
      ];
    });
    await persistBindings(stateDir, records);
    const kept = records.map((r) => ({ address: r.address, driver: r.driver }));
    return { kept, forgotten: [], error: null };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return {
      kept: [],
      forgotten: [],
      error: `${bindingsPath(stateDir)} was not updated: ${message}`,
    };
  }
}
