/**
 * Storing an agent's inventory: a snapshot replaces the host's state, a delta patches it. Each is
 * one transaction, in bulk statements that write only what changed (the @vfio-fleet/db helpers).
 *
 * Readiness is never taken from the agent: the server strips the agent's `readiness`, re-assesses
 * the facts with core's assessSnapshot, and stores its own result, so a compromised agent cannot
 * mark a host-critical device `ready`. A delta is re-assessed on the whole host, because one
 * device's change (a driver, a group member) can change the readiness of its group mates.
 */
import {
  applyDelta,
  assessSnapshot,
  type DeltaMessage,
  type DeviceFacts,
  type HostFactsSnapshot,
  type HostSnapshot,
  INVENTORY_SCHEMA_VERSION,
  type SnapshotMessage,
} from '@vfio-fleet/core';
import {
  bulkUpsertDevices,
  type Database,
  deleteDevicesNotIn,
  devices,
  hosts,
  iommuGroups,
  syncHostLabels,
  syncIommuGroups,
} from '@vfio-fleet/db';
import { asc, eq } from 'drizzle-orm';

/** What one ingest wrote, for logs and tests. */
export interface IngestResult {
  devicesWritten: number;
  devicesDeleted: number;
}

/** The facts of a snapshot without the agent's readiness verdicts. */
function stripReadiness(snapshot: HostSnapshot): HostFactsSnapshot {
  return {
    ...snapshot,
    devices: snapshot.devices.map(({ readiness: _ignored, ...facts }): DeviceFacts => facts),
  };
}

async function store(
  tx: Database,
  hostId: string,
  assessed: HostSnapshot,
  stream: { epoch: string; seq: number },
  labels: Readonly<Record<string, string>> | null,
): Promise<IngestResult> {
  const { host } = assessed;
  await tx
    .update(hosts)
    .set({
      hostname: host.hostname,
      machineId: host.machineId,
      kernelRelease: host.kernelRelease,
      cpuVendor: host.cpuVendor,
      iommuEnabled: host.iommu.enabled,
      interruptRemapping: host.iommu.interruptRemapping,
      host,
      problems: assessed.problems,
      epoch: stream.epoch,
      lastSeq: stream.seq,
      updatedAt: new Date(),
    })
    .where(eq(hosts.id, hostId));
  const upserted = await bulkUpsertDevices(tx, hostId, assessed.devices);
  const deleted = await deleteDevicesNotIn(
    tx,
    hostId,
    assessed.devices.map((d) => d.address),
  );
  await syncIommuGroups(tx, hostId, assessed.groups);
  if (labels !== null) await syncHostLabels(tx, hostId, labels);
  return { devicesWritten: upserted.written, devicesDeleted: deleted };
}

/** Replaces everything the server holds for the host with this snapshot. */
export function ingestSnapshot(
  db: Database,
  hostId: string,
  message: SnapshotMessage,
  labels: Readonly<Record<string, string>>,
): Promise<IngestResult> {
  const assessed = assessSnapshot(stripReadiness(message.snapshot));
  return db.transaction((tx) =>
    store(tx, hostId, assessed, { epoch: message.epoch, seq: message.seq }, labels),
  );
}

export type DeltaOutcome =
  | { applied: true; result: IngestResult }
  | { applied: false; reason: string };

/**
 * Applies a delta to the stored state, or says why it cannot (the agent then gets `resync`): the
 * server keeps only the newest acknowledged state, so a delta must be based on exactly it. The
 * host row is locked for the transaction, so two messages of one host never interleave.
 */
export function ingestDelta(
  db: Database,
  hostId: string,
  message: DeltaMessage,
): Promise<DeltaOutcome> {
  return db.transaction(async (tx): Promise<DeltaOutcome> => {
    const [row] = await tx.select().from(hosts).where(eq(hosts.id, hostId)).for('update');
    if (row === undefined) return { applied: false, reason: 'the host is gone' };
    if (row.epoch !== message.epoch || row.lastSeq !== message.baseSeq || row.host === null) {
      return {
        applied: false,
        reason:
          row.epoch !== message.epoch
            ? `the server holds no state of epoch ${message.epoch}`
            : `the server holds seq ${row.lastSeq ?? 'none'}, not the delta's base ${message.baseSeq}`,
      };
    }
    const base = await loadSnapshot(tx, hostId, row.host, row.problems);
    let next: HostSnapshot;
    try {
      next = applyDelta(base, message.delta, new Date().toISOString());
    } catch (error) {
      return {
        applied: false,
        reason: `the delta does not fit the stored state: ${error instanceof Error ? error.message : String(error)}`,
      };
    }
    const assessed = assessSnapshot(stripReadiness(next));
    const result = await store(
      tx,
      hostId,
      assessed,
      { epoch: message.epoch, seq: message.seq },
      null,
    );
    return { applied: true, result };
  });
}

/**
 * The stored state of a host as a snapshot (devices in address order, as core keeps them): what
 * deltas apply to, and what the jobs service plans on.
 */
export async function loadSnapshot(
  tx: Database,
  hostId: string,
  host: NonNullable<typeof hosts.$inferSelect.host>,
  problems: typeof hosts.$inferSelect.problems,
): Promise<HostSnapshot> {
  const deviceRows = await tx
    .select({ facts: devices.facts })
    .from(devices)
    .where(eq(devices.hostId, hostId))
    // Canonical addresses are fixed-width lowercase hex, so text order is address order.
    .orderBy(asc(devices.address));
  const groupRows = await tx
    .select({ id: iommuGroups.groupId, devices: iommuGroups.devices })
    .from(iommuGroups)
    .where(eq(iommuGroups.hostId, hostId))
    .orderBy(asc(iommuGroups.groupId));
  return {
    schemaVersion: INVENTORY_SCHEMA_VERSION,
    collectedAt: new Date().toISOString(),
    host,
    devices: deviceRows.map((r) => r.facts),
    groups: groupRows,
    problems,
  };
}
