/**
 * Storing an agent's inventory: a snapshot replaces the host's state, a delta patches it. Each is
 * one transaction, in bulk statements that write only what changed (the @vfio-fleet/db helpers).
 *
 * Readiness is never taken from the agent: the server strips the agent's `readiness`, re-assesses
 * the facts with core's assessSnapshot, and stores its own result, so a compromised agent cannot
 * mark a host-critical device `ready`. One device's change (a driver, a group member) can change
 * the readiness of its group mates and of its parent bridge, so a delta is re-assessed on every
 * device it can affect (core's deltaScope), and on the whole host when it changes the host section.
 *
 * Agents resend their whole inventory after every reconnect, and almost always nothing changed. So
 * `hosts.inventory_hash` keeps a hash of what store() last wrote (see inventoryHash); a snapshot
 * with the same hash only moves the stream position (one UPDATE, committed without waiting for
 * the WAL flush) and writes no device, group or label row, nor anything store() derives from them.
 *
 * A host's first snapshot (no inventory rows yet: just enrolled, or cleared) is inserted in one
 * statement without the upserts' comparisons and deletes (@vfio-fleet/db insertFirstInventory),
 * which is what onboarding a fleet costs.
 */
import { createHash } from 'node:crypto';
import {
  applyDelta,
  assessSnapshot,
  assessSnapshotInSlices,
  type DeltaMessage,
  type Device,
  type DeviceFacts,
  deltaScope,
  deviceSchema,
  type FactsSnapshotMessage,
  type HostFactsSnapshot,
  type HostSnapshot,
  hostFactsSnapshotSchema,
  INVENTORY_SCHEMA_VERSION,
  type SnapshotMessage,
  stableEqual,
} from '@vfio-fleet/core';
import {
  type Database,
  deleteDevicesNotIn,
  devices,
  type HostTopology,
  hostInventoryEmptySql,
  hosts,
  insertFirstInventory,
  isUniqueViolation,
  loadHostTopology,
  lockedTopologyColumns,
  rollupInputs,
  syncHostLabels,
  syncHostRollups,
  syncIommuGroups,
  topologyIfCurrent,
} from '@vfio-fleet/db';
import { and, asc, eq, getTableColumns, inArray, sql } from 'drizzle-orm';
import { finishYielding, yieldToEventLoop } from '../ops/yield';
import { DEVICES_PER_STATEMENT, upsertDevicesInSlices } from './device-slices';
import {
  addDeviceTerm,
  type Digest,
  devicesDigest,
  devicesDigestInSlices,
  digestHex,
  digestOfHex,
} from './devices-digest';
import {
  checkStoredDevices,
  checkStoredHost,
  loadSnapshot,
  refuseDamagedState,
} from './stored-state';

/** What one ingest wrote, for logs and tests. */
export interface IngestResult {
  devicesWritten: number;
  devicesDeleted: number;
  /** The snapshot matched the stored inventory hash: only the stream position was written. */
  unchanged: boolean;
}

/**
 * Bumped whenever the canonical form below changes, so that hashes stored by an older server never
 * match and the first snapshot after an upgrade is stored in full.
 */
const INVENTORY_HASH_VERSION = 'v2';

/** JSON.stringify replacer: every plain object re-created with its keys in sorted order. */
function sortedKeys(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return value;
  const record = value as Record<string, unknown>;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(record).sort()) sorted[key] = record[key];
  return sorted;
}

/**
 * JSON text of `value` with object keys sorted (undefined members dropped, as JSON does): the same
 * text for the same content whatever the key order. For the labels, a record in whatever order the
 * agent wrote it. (A replacer keeps the walk in V8's native JSON.stringify: faster than a
 * hand-written recursive serializer, but still about 4x a plain stringify; see inventoryHash.)
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, sortedKeys) ?? 'null';
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * `v2:<rest>.<devices>:<labels>`: of the assessed inventory store() writes (host, devices with
 * the server's readiness, groups, problems; not collectedAt, which changes on every read), a
 * sha256 of everything but the devices, and the devices' digest (see devicesDigest); then a sha256
 * of the labels. In parts, so that a delta (which carries no labels) can replace the inventory and
 * keep the labels part, and can update the devices' digest from the few devices it re-assessed
 * without reading the rest back; a resend after deltas still matches.
 *
 * Each part hashes plain JSON.stringify output, so it depends on key order: canonical sorting
 * costs about 4 ms more per 200-device snapshot, as much as assessing it. That is safe because a
 * different order can only make equal inventories look different (a full store, whose upserts
 * still skip unchanged rows), never the reverse. Orders are the same where it matters: a snapshot
 * from the gateway has its schema's key order (zod builds its output in shape order), and
 * ingestDelta puts what it read back from jsonb into that order (inSchemaOrder, deviceInSchemaOrder).
 */
export function inventoryHash(
  assessed: HostSnapshot,
  labels: Readonly<Record<string, string>>,
  digest: Digest = devicesDigest(assessed.devices),
): string {
  return `${inventoryPart(assessed, digest)}:${sha256(canonicalJson(labels))}`;
}

function inventoryPart(
  assessed: HostSnapshot,
  digest: Digest = devicesDigest(assessed.devices),
): string {
  const { collectedAt: _changesEveryRead, devices: _inDigest, ...rest } = assessed;
  return `${INVENTORY_HASH_VERSION}:${sha256(JSON.stringify(rest))}.${digestHex(digest)}`;
}

/** The parts of a stored v2 hash; null for a hash of another version (or none). */
function parseStoredHash(
  stored: string | null,
): { rest: string; devices: Digest; labels: string } | null {
  const match = /^v2:([0-9a-f]{64})\.([0-9a-f]{64}):([0-9a-f]{64})$/.exec(stored ?? '');
  if (match === null) return null;
  const [, rest = '', devices = '', labels = ''] = match;
  return { rest, devices: digestOfHex(devices), labels };
}

/**
 * The facts with every object's keys in schema order, as a parsed snapshot has them (facts read
 * back from jsonb come in jsonb's order), so that equal inventories hash equal. Unchanged when
 * they do not parse (they should: they were validated on the way in): only the hash then differs.
 */
function inSchemaOrder(facts: HostFactsSnapshot): HostFactsSnapshot {
  const parsed = hostFactsSnapshotSchema.safeParse(facts);
  return parsed.success ? parsed.data : facts;
}

/** The stored hash with its inventory part replaced; null when there is no labels part to keep. */
function withInventory(stored: string | null, assessed: HostSnapshot): string | null {
  const labelsPart = stored?.split(':')[2];
  return labelsPart === undefined ? null : `${inventoryPart(assessed)}:${labelsPart}`;
}

/**
 * A device read back from jsonb with its keys in schema order, as assessSnapshot's output has them
 * (facts in the schema's order, then readiness), so that its digest term is the one it was stored
 * with; null when it no longer parses.
 */
function deviceInSchemaOrder(device: Device): Device | null {
  const parsed = deviceSchema.safeParse(device);
  return parsed.success ? parsed.data : null;
}

/**
 * The facts of a snapshot without the agent's readiness verdicts (a snapshot the gateway parsed
 * with parseAgentMessageForServer has none already).
 */
function stripReadiness(snapshot: HostFactsSnapshot): HostFactsSnapshot {
  return {
    ...snapshot,
    devices: snapshot.devices.map((device): DeviceFacts => {
      const { readiness: _ignored, ...facts } = device as DeviceFacts & { readiness?: unknown };
      return facts;
    }),
  };
}

/**
 * Makes the transaction's commit not wait for the WAL flush (the largest part of a small write's
 * commit), as an expression: callers add it to a statement they run anyway rather than spend a
 * round trip on `SET LOCAL`. Every ingest transaction may: losing one in a database crash is
 * harmless, because the database then still holds the previous state whole (with its stream
 * position), the agent's next delta names a base the server does not hold, gets `resync`, and
 * sends a snapshot, which is stored again.
 */
const ASYNC_COMMIT = sql<string>`set_config('synchronous_commit', 'off', true)`;

async function store(
  tx: Database,
  hostId: string,
  assessed: HostSnapshot,
  stream: { epoch: string; seq: number },
  labels: Readonly<Record<string, string>> | null,
  hash: string | null,
  /** The raw hash of the frame being stored (raw-snapshot.ts; null: none, or a delta). */
  rawHash: string | null,
  /**
   * A delta's store: only these devices differ from the stored ones (the rest are not sent to the
   * database at all); whether the groups do; whether it removes devices (else no DELETE runs); and
   * whether anything the rollups read changed (else they are not recomputed); whether the host
   * section or the problems did (else the host row keeps its jsonb, which would otherwise be
   * TOASTed anew on every delta). Absent: a snapshot, everything is compared there.
   */
  changes?: {
    devices: readonly Device[];
    groups: boolean;
    removes: boolean;
    rollups: boolean;
    host: boolean;
    /** Every address the host has now, when `assessed` holds only some of its devices. */
    addresses?: readonly string[];
  },
  /**
   * A snapshot's store may insert the whole inventory at once when the host holds none yet
   * (insertFirstInventory); false on the retry after such an insert met rows stored meanwhile.
   */
  firstInventory = false,
): Promise<IngestResult> {
  const { host } = assessed;
  const hostColumns =
    changes === undefined || changes.host
      ? {
          hostname: host.hostname,
          machineId: host.machineId,
          kernelRelease: host.kernelRelease,
          cpuVendor: host.cpuVendor,
          iommuEnabled: host.iommu.enabled,
          interruptRemapping: host.iommu.interruptRemapping,
          host,
          problems: assessed.problems,
        }
      : {};
  const updateHost = tx
    .update(hosts)
    .set({
      ...hostColumns,
      epoch: stream.epoch,
      lastSeq: stream.seq,
      inventoryHash: hash,
      rawInventoryHash: rawHash,
      updatedAt: new Date(),
    })
    .where(eq(hosts.id, hostId));
  if (changes === undefined) {
    // A snapshot: the commit need not wait for the WAL flush, and with the host row now locked,
    // whether the host holds any inventory yet.
    const [locked] = await updateHost.returning({
      asyncCommit: ASYNC_COMMIT,
      empty: firstInventory ? hostInventoryEmptySql(hostId) : sql<boolean>`false`,
    });
    // A host over one statement's worth of devices is stored in slices (device-slices.ts).
    if (
      locked?.empty === true &&
      labels !== null &&
      assessed.devices.length <= DEVICES_PER_STATEMENT
    ) {
      const { devicesWritten } = await insertFirstInventory(tx, hostId, {
        devices: assessed.devices,
        groups: assessed.groups,
        labels,
      });
      return { devicesWritten, devicesDeleted: 0, unchanged: false };
    }
  } else {
    await updateHost;
  }
  const upserted = await upsertDevicesInSlices(tx, hostId, changes?.devices ?? assessed.devices);
  const deleted =
    changes === undefined || changes.removes
      ? await deleteDevicesNotIn(
          tx,
          hostId,
          changes?.addresses ?? assessed.devices.map((d) => d.address),
        )
      : 0;
  if (changes === undefined || changes.groups) await syncIommuGroups(tx, hostId, assessed.groups);
  if (changes === undefined || (changes.rollups && (upserted.written > 0 || deleted > 0))) {
    await syncHostRollups(tx, hostId);
  }
  if (labels !== null) await syncHostLabels(tx, hostId, labels);
  return { devicesWritten: upserted.written, devicesDeleted: deleted, unchanged: false };
}

/**
 * Replaces everything the server holds for the host with this snapshot; when it is what the server
 * already holds (same inventory hash), only the stream position is written.
 */
export async function ingestSnapshot(
  db: Database,
  hostId: string,
  message: FactsSnapshotMessage | SnapshotMessage,
  labels: Readonly<Record<string, string>>,
  rawHash: string | null = null,
): Promise<IngestResult> {
  // In slices, the event loop free between them: a host at the protocol's limit takes a few
  // hundred milliseconds of CPU in each of these steps (ops/yield.ts).
  const assessed = await finishYielding(assessSnapshotInSlices(stripReadiness(message.snapshot)));
  const digest = await finishYielding(devicesDigestInSlices(assessed.devices));
  const hash = inventoryHash(assessed, labels, digest);
  const stream = { epoch: message.epoch, seq: message.seq };
  const attempt = (firstInventory: boolean) =>
    db.transaction(async (tx) => {
      // Matches only while the stored inventory is this one; otherwise store() rewrites it all.
      const same = await tx
        .update(hosts)
        .set({
          epoch: stream.epoch,
          lastSeq: stream.seq,
          rawInventoryHash: rawHash,
          updatedAt: new Date(),
        })
        .where(and(eq(hosts.id, hostId), eq(hosts.inventoryHash, hash)))
        // On PostgreSQL the WAL flush is most of what an unchanged resend would otherwise cost.
        .returning({ id: hosts.id, asyncCommit: ASYNC_COMMIT });
      if (same.length === 0) {
        return store(
          tx,
          hostId,
          assessed,
          stream,
          labels,
          hash,
          rawHash,
          undefined,
          firstInventory,
        );
      }
      return { devicesWritten: 0, devicesDeleted: 0, unchanged: true };
    });
  try {
    return await attempt(true);
  } catch (error) {
    // The host looked empty, but a transaction that stored it meanwhile committed its rows (see
    // insertFirstInventory): again, comparing with them.
    if (!isUniqueViolation(error)) throw error;
    return attempt(false);
  }
}

/**
 * Moves the stream position to a resent snapshot when its raw hash is the stored one; false when
 * it is not (the caller then ingests the snapshot in full). Like the inventory-hash path, only the
 * stream position is written, without waiting for the WAL flush.
 */
export async function ingestUnchangedSnapshot(
  db: Database,
  hostId: string,
  stream: { epoch: string; seq: number },
  rawHash: string,
): Promise<boolean> {
  // One statement, committed on its own (its implicit transaction is the one set_config's local
  // setting applies to): no BEGIN and COMMIT round trips for the commonest message of a reconnect.
  const moved = await db
    .update(hosts)
    .set({ epoch: stream.epoch, lastSeq: stream.seq, updatedAt: new Date() })
    .where(and(eq(hosts.id, hostId), eq(hosts.rawInventoryHash, rawHash)))
    .returning({ id: hosts.id, asyncCommit: ASYNC_COMMIT });
  return moved.length > 0;
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
    // The lock, and with it the host's topology for a delta of devices (one round trip fewer).
    const [row] = await tx
      .select({
        ...getTableColumns(hosts),
        asyncCommit: ASYNC_COMMIT,
        ...lockedTopologyColumns(hostId),
      })
      .from(hosts)
      .where(eq(hosts.id, hostId))
      .for('update');
    if (row === undefined) return { applied: false, reason: 'the host is gone' };
    const { host } = row;
    if (row.epoch !== message.epoch || row.lastSeq !== message.baseSeq || host === null) {
      return {
        applied: false,
        reason:
          row.epoch !== message.epoch
            ? `the server holds no state of epoch ${message.epoch}`
            : `the server holds seq ${row.lastSeq ?? 'none'}, not the delta's base ${message.baseSeq}`,
      };
    }
    const checked = checkStoredHost(host, row.problems);
    if (checked === null) return refuseDamagedState(tx, hostId);
    const stored = { ...row, ...checked };
    return (
      (await ingestDeltaInScope(tx, hostId, stored, topologyIfCurrent(row), message)) ??
      ingestDeltaWhole(tx, hostId, stored, message)
    );
  });
}

type LockedHost = typeof hosts.$inferSelect & { host: NonNullable<typeof hosts.$inferSelect.host> };

function misfit(error: unknown): DeltaOutcome {
  return {
    applied: false,
    reason: `the delta does not fit the stored state: ${error instanceof Error ? error.message : String(error)}`,
  };
}

/**
 * A delta of devices only (the usual one: a driver bound, a device hot-plugged), applied to the
 * devices it can affect (core's deltaScope: its devices, their IOMMU group mates, their parents)
 * rather than to the whole host: their stored rows are read back, re-assessed, written where they
 * differ, and the inventory hash's devices digest is updated by their terms. On a 200-device host
 * that reads a handful of rows instead of 200 jsonb documents. Null when the delta changes the
 * host section, the groups or the problems, or the stored hash is not one this can update: the
 * caller then applies it to the whole host.
 */
async function ingestDeltaInScope(
  tx: Database,
  hostId: string,
  row: LockedHost,
  /** The topology read with the lock; null when it may be stale (it is then read again). */
  lockedTopology: HostTopology | null,
  message: DeltaMessage,
): Promise<DeltaOutcome | null> {
  const { delta } = message;
  const storedHash = parseStoredHash(row.inventoryHash);
  if (
    storedHash === null ||
    delta.host !== undefined ||
    delta.groups !== undefined ||
    delta.problems !== undefined
  ) {
    return null;
  }
  const { links, listing } = lockedTopology ?? (await loadHostTopology(tx, hostId));
  const scope = deltaScope(links, listing, delta);
  if (scope === null) return null;
  const loaded = checkStoredDevices(
    scope.load.size === 0
      ? []
      : await tx
          .select({
            address: devices.address,
            iommuGroup: devices.iommuGroup,
            facts: devices.facts,
          })
          .from(devices)
          .where(and(eq(devices.hostId, hostId), inArray(devices.address, [...scope.load])))
          .orderBy(asc(devices.address)),
  );
  if (loaded.damaged.length > 0) return refuseDamagedState(tx, hostId);
  const now = new Date().toISOString();
  const base: HostSnapshot = {
    schemaVersion: INVENTORY_SCHEMA_VERSION,
    collectedAt: now,
    host: row.host,
    devices: loaded.devices,
    groups: listing.filter((g) => scope.groups.has(g.id)),
    problems: row.problems,
  };
  let next: HostSnapshot;
  try {
    next = applyDelta(base, delta, now);
  } catch (error) {
    return misfit(error);
  }
  const assessed = assessSnapshot(inSchemaOrder(stripReadiness(next)));
  const before = new Map(base.devices.map((d) => [d.address, d]));
  const changedDevices = assessed.devices.filter((d) => {
    if (!scope.reassess.has(d.address)) return false;
    const old = before.get(d.address);
    return old === undefined || !stableEqual(old, d);
  });

  const digest = storedHash.devices;
  const gone = [
    ...changedDevices.map((d) => before.get(d.address)),
    ...delta.devicesRemoved.map((address) => before.get(address)),
  ];
  for (const old of gone) {
    if (old === undefined) continue;
    const ordered = deviceInSchemaOrder(old);
    if (ordered === null) return null;
    addDeviceTerm(digest, ordered, -1);
  }
  for (const device of changedDevices) addDeviceTerm(digest, device, 1);

  const removes = delta.devicesRemoved.length > 0;
  const removed = new Set(delta.devicesRemoved);
  const result = await store(
    tx,
    hostId,
    assessed,
    { epoch: message.epoch, seq: message.seq },
    null,
    `${INVENTORY_HASH_VERSION}:${storedHash.rest}.${digestHex(digest)}:${storedHash.labels}`,
    null,
    {
      devices: changedDevices,
      groups: false,
      removes,
      rollups: removes || rollupsChanged(changedDevices, before),
      host: false,
      addresses: removes
        ? [
            ...links.map((l) => l.address).filter((address) => !removed.has(address)),
            ...delta.devicesAdded.map((d) => d.address),
          ]
        : undefined,
    },
  );
  return { applied: true, result };
}

/** Whether any written device changes what the per-host rollups read (new ones always do). */
function rollupsChanged(written: readonly Device[], before: ReadonlyMap<string, Device>): boolean {
  return written.some((d) => {
    const old = before.get(d.address);
    return old === undefined || rollupInputs(old) !== rollupInputs(d);
  });
}

/** A delta applied to the whole stored host, re-assessed whole: any delta, at any stored hash. */
async function ingestDeltaWhole(
  tx: Database,
  hostId: string,
  row: LockedHost,
  message: DeltaMessage,
): Promise<DeltaOutcome> {
  const loaded = await loadSnapshot(tx, hostId, row.host, row.problems);
  if (loaded === null || loaded.damaged) return refuseDamagedState(tx, hostId);
  const base = loaded.snapshot;
  let next: HostSnapshot;
  try {
    next = applyDelta(base, message.delta, new Date().toISOString());
  } catch (error) {
    return misfit(error);
  }
  await yieldToEventLoop();
  const assessed = await finishYielding(
    assessSnapshotInSlices(inSchemaOrder(stripReadiness(next))),
  );
  // A delta changes a device or two, but re-assessing can change their group mates: what goes to
  // the database is every device whose assessed content differs from its stored row, not the
  // whole host (a 200-device host would otherwise ship ~300 KB per one-device delta).
  const stored = new Map(base.devices.map((d) => [d.address, d]));
  const changedDevices = assessed.devices.filter((d) => {
    const before = stored.get(d.address);
    return before === undefined || !stableEqual(before, d);
  });
  const removes = message.delta.devicesRemoved.length > 0;
  const result = await store(
    tx,
    hostId,
    assessed,
    { epoch: message.epoch, seq: message.seq },
    null,
    withInventory(row.inventoryHash, assessed),
    null,
    {
      devices: changedDevices,
      groups: !stableEqual(base.groups, assessed.groups),
      removes,
      rollups: removes || rollupsChanged(changedDevices, stored),
      host:
        !stableEqual(base.host, assessed.host) || !stableEqual(base.problems, assessed.problems),
    },
  );
  return { applied: true, result };
}
