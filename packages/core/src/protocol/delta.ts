/**
 * Snapshot deltas: after the first full snapshot of an epoch, the agent sends only what changed.
 * A host's inventory rarely changes (a rebind, a hot-plug, a module load), and a full snapshot of a
 * large host is hundreds of kilobytes, so heartbeats stay cheap and a change costs one device.
 *
 * Host, groups and problems are small and change together, so each travels whole when it changed;
 * devices travel one by one, keyed by address.
 */
import { z } from 'zod';
import { ParseError } from '../errors';
import type { Device, HostSnapshot } from '../inventory/schema';
import { pciAddressSchema } from '../inventory/schema';
import { comparePciAddresses } from '../pci/address';
import {
  MAX_WIRE_DEVICES,
  MAX_WIRE_GROUPS,
  MAX_WIRE_PROBLEMS,
  refuseBadGroupListing,
  wireDeviceSchema,
  wireHostSchema,
  wireIommuGroupSchema,
  wireProblemSchema,
} from './wire-inventory';

export const snapshotDeltaSchema = z
  .object({
    /** The whole host section, when any of it changed. */
    host: wireHostSchema.optional(),
    /** Every IOMMU group, when any changed. */
    groups: z.array(wireIommuGroupSchema).max(MAX_WIRE_GROUPS).optional(),
    /** Every problem, when the list changed. */
    problems: z.array(wireProblemSchema).max(MAX_WIRE_PROBLEMS).optional(),
    /** Devices the base does not have. */
    devicesAdded: z.array(wireDeviceSchema).max(MAX_WIRE_DEVICES),
    /** Devices the base has, in full, where anything about them changed. */
    devicesChanged: z.array(wireDeviceSchema).max(MAX_WIRE_DEVICES),
    /** Addresses of devices that are gone. */
    devicesRemoved: z.array(pciAddressSchema).max(MAX_WIRE_DEVICES),
  })
  .superRefine((delta, ctx) => {
    if (delta.groups !== undefined) refuseBadGroupListing(delta.groups, ctx, ['groups']);
    // One address in two lists (or twice in one) has no single meaning: reject it rather than guess.
    const seen = new Set<string>();
    const lists = [
      ['devicesAdded', delta.devicesAdded.map((d) => d.address)],
      ['devicesChanged', delta.devicesChanged.map((d) => d.address)],
      ['devicesRemoved', delta.devicesRemoved],
    ] as const;
    for (const [field, list] of lists) {
      list.forEach((address, index) => {
        if (seen.has(address)) {
          ctx.addIssue({
            code: 'custom',
            path: [field, index],
            message: `${address} appears more than once in the delta`,
          });
        }
        seen.add(address);
      });
    }
  });
export type SnapshotDelta = z.infer<typeof snapshotDeltaSchema>;

/**
 * Deep equality of JSON values (what a parsed message or a snapshot is): object key order does not
 * matter, array order does. Not for cyclic values, functions or class instances.
 */
export function stableEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((item, i) => stableEqual(item, b[i]));
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  // Undefined-valued keys are absent in JSON, so they do not count.
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.hasOwn(rb, k) && stableEqual(ra[k], rb[k]));
}

function byAddress<T extends { address: string }>(x: T, y: T): number {
  return comparePciAddresses(x.address, y.address);
}

/** What turns `base` into `next`; null when nothing but `collectedAt` differs (nothing to send). */
export function diffSnapshots(base: HostSnapshot, next: HostSnapshot): SnapshotDelta | null {
  const before = new Map(base.devices.map((d) => [d.address, d]));
  const after = new Map(next.devices.map((d) => [d.address, d]));
  const devicesAdded: Device[] = [];
  const devicesChanged: Device[] = [];
  for (const device of after.values()) {
    const old = before.get(device.address);
    if (old === undefined) devicesAdded.push(device);
    else if (!stableEqual(old, device)) devicesChanged.push(device);
  }
  const devicesRemoved = [...before.keys()].filter((a) => !after.has(a)).sort(comparePciAddresses);
  devicesAdded.sort(byAddress);
  devicesChanged.sort(byAddress);

  const delta: SnapshotDelta = { devicesAdded, devicesChanged, devicesRemoved };
  if (!stableEqual(base.host, next.host)) delta.host = next.host;
  if (!stableEqual(base.groups, next.groups)) delta.groups = next.groups;
  if (!stableEqual(base.problems, next.problems)) delta.problems = next.problems;
  const empty =
    delta.host === undefined &&
    delta.groups === undefined &&
    delta.problems === undefined &&
    devicesAdded.length === 0 &&
    devicesChanged.length === 0 &&
    devicesRemoved.length === 0;
  return empty ? null : delta;
}

/**
 * `base` with `delta` applied, stamped `collectedAt`; devices in address order. Throws ParseError
 * when the delta does not fit the base (adds a device it has, changes or removes one it lacks):
 * the two sides disagree about the base, and the server answers with `resync` rather than guess.
 */
export function applyDelta(
  base: HostSnapshot,
  delta: SnapshotDelta,
  collectedAt: string,
): HostSnapshot {
  const devices = new Map(base.devices.map((d) => [d.address, d]));
  const misfit = (address: string, reason: string): ParseError =>
    new ParseError('snapshot delta', address, reason);
  for (const address of delta.devicesRemoved) {
    if (!devices.delete(address)) throw misfit(address, 'removes a device the base does not have');
  }
  for (const device of delta.devicesChanged) {
    if (!devices.has(device.address)) {
      throw misfit(device.address, 'changes a device the base does not have');
    }
    devices.set(device.address, device);
  }
  for (const device of delta.devicesAdded) {
    if (devices.has(device.address)) {
      throw misfit(device.address, 'adds a device the base already has');
    }
    devices.set(device.address, device);
  }
  return {
    schemaVersion: base.schemaVersion,
    collectedAt,
    host: delta.host ?? base.host,
    devices: [...devices.values()].sort(byAddress),
    groups: delta.groups ?? base.groups,
    problems: delta.problems ?? base.problems,
  };
}
