// Hosts with a real inventory in the database without an agent process: a fixture scenario's tree,
// `scan --json` of it by the real agent bundle (a real snapshot), a host row, and the server's own
// ingestSnapshot. For tests of what the server does with stored state (previews, jobs, bulk).
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import {
  diffSnapshots,
  type HostSnapshot,
  type SnapshotMessage,
  snapshotMessageSchema,
} from '@vfio-fleet/core';
import { type Database, hosts } from '@vfio-fleet/db';
import { buildScenario, type ScenarioName } from '@vfio-fleet/host-fixtures';
import { type DeltaOutcome, ingestDelta, ingestSnapshot } from '../../src/gateway/ingest';
import { scanJson } from './harness';

export { openTestDb } from './harness';

/** One scan per scenario per test run: the snapshot is data, each host gets its own copy. */
const scans = new Map<ScenarioName, Promise<HostSnapshot>>();

export function scenarioSnapshot(tmp: string, scenario: ScenarioName): Promise<HostSnapshot> {
  let scan = scans.get(scenario);
  if (scan === undefined) {
    scan = (async () => {
      const root = path.join(tmp, `scan-${scenario}`);
      await mkdir(root, { recursive: true });
      await buildScenario(root, scenario);
      return snapshotMessage(scanJson(root), 1).snapshot;
    })();
    scans.set(scenario, scan);
  }
  return scan.then((snapshot) => structuredClone(snapshot));
}

/** Parsed with the wire schema, as the gateway parses what an agent sends. */
export function snapshotMessage(
  snapshot: unknown,
  seq: number,
  epoch = 'test-epoch',
): SnapshotMessage {
  return snapshotMessageSchema.parse({ type: 'snapshot', epoch, seq, snapshot });
}

export interface IngestedHost {
  hostId: string;
  hostname: string;
  snapshot: HostSnapshot;
}

/**
 * A host row (offline: no agent is connected) holding the scenario's inventory, as if its agent had
 * sent one snapshot. `hostname` replaces the scenario's, so several hosts of one scenario differ.
 */
export async function ingestScenario(
  db: Database,
  tmp: string,
  scenario: ScenarioName,
  options: {
    hostname?: string;
    labels?: Record<string, string>;
    /** What its agent said at hello; true (runs jobs) unless a test says otherwise. */
    allowRebind?: boolean | null;
    /** Changes the scanned snapshot before it is ingested (facts the fixtures cannot express). */
    edit?: (snapshot: HostSnapshot) => void;
  } = {},
): Promise<IngestedHost> {
  const snapshot = await scenarioSnapshot(tmp, scenario);
  options.edit?.(snapshot);
  if (options.hostname !== undefined) snapshot.host.hostname = options.hostname;
  const [row] = await db
    .insert(hosts)
    .values({
      agentId: `test-${randomUUID()}`,
      hostname: snapshot.host.hostname,
      allowRebind: options.allowRebind === undefined ? true : options.allowRebind,
    })
    .returning({ id: hosts.id });
  if (row === undefined) throw new Error('no host row returned');
  await ingestSnapshot(db, row.id, snapshotMessage(snapshot, 1), options.labels ?? {});
  return { hostId: row.id, hostname: snapshot.host.hostname, snapshot };
}

/** A later snapshot of the same host (a new seq), e.g. one where a binding changed. */
export async function reingest(
  db: Database,
  host: IngestedHost,
  snapshot: HostSnapshot,
  seq: number,
  labels: Record<string, string> = {},
): Promise<void> {
  await ingestSnapshot(db, host.hostId, snapshotMessage(snapshot, seq), labels);
}

/**
 * The delta an agent would send to go from `before` to `after` (on the ingested stream's epoch,
 * `test-epoch`), through the server's ingestDelta. Throws when the two are the same inventory.
 */
export async function ingestChange(
  db: Database,
  hostId: string,
  before: HostSnapshot,
  after: HostSnapshot,
  baseSeq: number,
): Promise<DeltaOutcome> {
  const delta = diffSnapshots(before, after);
  if (delta === null) throw new Error('the change made no delta');
  return ingestDelta(db, hostId, {
    type: 'delta',
    epoch: 'test-epoch',
    baseSeq,
    seq: baseSeq + 1,
    delta,
  });
}
