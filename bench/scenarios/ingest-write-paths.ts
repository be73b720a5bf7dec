// The database side of snapshot ingest, on each driver: how fast our bulk upsert writes device rows
// against the write paths it replaced, and what an unchanged resend costs against a cold ingest.
//
// The same rows (N synthetic hosts x 200 devices, readiness as the server assesses it) are written
// cold (device table emptied before each repetition) by
//   ours        bulkUpsertDevices: the whole host as one jsonb document, one statement;
//   VALUES      drizzle's multi-row INSERT ... VALUES ... ON CONFLICT DO UPDATE ... WHERE facts
//               IS DISTINCT FROM excluded.facts, chunked at DEVICE_ROWS_PER_STATEMENT (the old
//               path: same conflict handling, so the same work);
//   row-by-row  one such INSERT per device (on a few hosts: it is a rate).
// Each host is one transaction, as ingest does it. Repetitions alternate the order.
//
// Then ingestSnapshot itself: the hosts cold (no rows, no stored hash) and the same snapshots again
// (new message objects, new seq), which must write no device row. Both include assessSnapshot and
// the inventory hash; neither includes parsing the frame (fleet-load measures the wire).
//
// Targets per driver: ours >= 2x VALUES, >= 10x row-by-row; resend writes 0. The resend's speed
// against the cold ingest is reported as [INFO] here: this resend is the server's full check
// (assessed and hashed whole, what a resend costs when its bytes are not the stored ones), while
// the target, the same snapshots sent again, is judged end to end by fleet-load, where the
// gateway recognises them from their bytes (raw-snapshot.ts) before any of this runs. A cold host
// now takes insertFirstInventory's single statement, so this ratio fell from 5-6x to about 3x.
import { pathToFileURL } from 'node:url';
import {
  assessSnapshot,
  type Device,
  type DeviceFacts,
  type HostSnapshot,
  type SnapshotMessage,
} from '@vfio-fleet/core';
import {
  bulkUpsertDevices,
  type Database,
  type DbDriver,
  DEVICE_ROWS_PER_STATEMENT,
  deviceRow,
  devices,
  hosts,
} from '@vfio-fleet/db';
import { getTableColumns, type SQL, sql } from 'drizzle-orm';
import { ingestSnapshot } from '../../apps/web/src/gateway/ingest';
import { createBenchDatabase, DRIVERS } from '../lib/bench-db';
import { type BenchResult, median, type Target, target, targetAtMost } from '../lib/measure';
import { type SyntheticFleet, syntheticFleet } from '../lib/synthetic-fleet';

const OURS_VS_VALUES_TARGET = 2;
const OURS_VS_ROW_BY_ROW_TARGET = 10;
const RESEND_VS_COLD_TARGET = 5;

interface Sizes {
  /** Hosts written by ours and VALUES each repetition. */
  hosts: number;
  /** Hosts written row by row each repetition. */
  rowByRowHosts: number;
  repetitions: number;
}

const QUICK: Sizes = { hosts: 10, rowByRowHosts: 2, repetitions: 3 };
const FULL: Sizes = { hosts: 200, rowByRowHosts: 5, repetitions: 5 };

/** `SET col = excluded.col` for every column but the key: the old path's conflict clause. */
function excludedSet(): Record<string, SQL> {
  const set: Record<string, SQL> = {};
  for (const [key, column] of Object.entries(getTableColumns(devices))) {
    if (key === 'hostId' || key === 'address') continue;
    set[key] = sql.raw(`excluded."${column.name}"`);
  }
  return set;
}
const EXCLUDED = excludedSet();

/** The multi-row VALUES baseline: exactly what bulkUpsertDevices issued before the rewrite. */
async function valuesUpsert(
  tx: Database,
  hostId: string,
  list: readonly Device[],
): Promise<number> {
  const rows = list.map((device) => deviceRow(hostId, device));
  let written = 0;
  for (let start = 0; start < rows.length; start += DEVICE_ROWS_PER_STATEMENT) {
    const result = await tx
      .insert(devices)
      .values(rows.slice(start, start + DEVICE_ROWS_PER_STATEMENT))
      .onConflictDoUpdate({
        target: [devices.hostId, devices.address],
        set: EXCLUDED,
        setWhere: sql`${devices.facts} IS DISTINCT FROM excluded.facts`,
      })
      .returning({ address: devices.address });
    written += result.length;
  }
  return written;
}

/** One INSERT per device, same conflict handling. */
async function rowByRowUpsert(
  tx: Database,
  hostId: string,
  list: readonly Device[],
): Promise<number> {
  let written = 0;
  for (const device of list) {
    const result = await tx
      .insert(devices)
      .values(deviceRow(hostId, device))
      .onConflictDoUpdate({
        target: [devices.hostId, devices.address],
        set: EXCLUDED,
        setWhere: sql`${devices.facts} IS DISTINCT FROM excluded.facts`,
      })
      .returning({ address: devices.address });
    written += result.length;
  }
  return written;
}

function stripReadiness(snapshot: HostSnapshot) {
  return {
    ...snapshot,
    devices: snapshot.devices.map(({ readiness: _r, ...facts }): DeviceFacts => facts),
  };
}

type WritePath = (tx: Database, hostId: string, list: readonly Device[]) => Promise<number>;

const PATHS: Record<'ours' | 'values' | 'rowByRow', WritePath> = {
  ours: async (tx, hostId, list) => (await bulkUpsertDevices(tx, hostId, list)).written,
  values: valuesUpsert,
  rowByRow: rowByRowUpsert,
};

interface DriverFigures {
  metrics: Record<string, number>;
  targets: Target[];
  details: Record<string, unknown>;
}

async function benchDriver(
  driver: DbDriver,
  fleet: SyntheticFleet,
  sizes: Sizes,
): Promise<DriverFigures> {
  const bench = await createBenchDatabase(driver, 'ingest-write-paths');
  const handle = await bench.open();
  const db = handle.db;
  try {
    const hostIds: string[] = [];
    for (let i = 0; i < sizes.hosts; i++) {
      // As agent-gateway.ts's enrollment creates it: identity only, no inventory yet.
      const [row] = await db
        .insert(hosts)
        .values({ agentId: `bench-agent-${i}`, hostname: `bench-${i}` })
        .returning({ id: hosts.id });
      if (row === undefined) throw new Error('inserting a host returned no row');
      hostIds.push(row.id);
    }
    const lists = hostIds.map((_, i) => assessSnapshot(stripReadiness(fleet.snapshot(i))).devices);

    /** Writes hosts [0, count) cold with `path`, one transaction per host; rows per second. */
    const coldWrite = async (path: WritePath, count: number): Promise<number> => {
      await db.execute(sql`TRUNCATE devices`);
      let rows = 0;
      const started = performance.now();
      for (let i = 0; i < count; i++) {
        const hostId = hostIds[i];
        const list = lists[i];
        if (hostId === undefined || list === undefined) throw new Error(`no host ${i}`);
        rows += await db.transaction((tx) => path(tx, hostId, list));
      }
      const seconds = (performance.now() - started) / 1000;
      const expected = lists.slice(0, count).reduce((n, list) => n + list.length, 0);
      if (rows !== expected) throw new Error(`a cold write wrote ${rows} rows, not ${expected}`);
      return rows / seconds;
    };

    // Warm-up (JIT, plans, the table's first pages), untimed.
    await coldWrite(PATHS.ours, 2);
    await coldWrite(PATHS.values, 2);
    await coldWrite(PATHS.rowByRow, 1);

    const samples = { ours: [] as number[], values: [] as number[], rowByRow: [] as number[] };
    const vsValues: number[] = [];
    const vsRowByRow: number[] = [];
    for (let rep = 0; rep < sizes.repetitions; rep++) {
      const order: (keyof typeof PATHS)[] =
        rep % 2 === 0 ? ['ours', 'values', 'rowByRow'] : ['rowByRow', 'values', 'ours'];
      const got: Partial<Record<keyof typeof PATHS, number>> = {};
      for (const name of order) {
        const count = name === 'rowByRow' ? sizes.rowByRowHosts : sizes.hosts;
        got[name] = await coldWrite(PATHS[name], count);
        samples[name].push(got[name]);
      }
      vsValues.push((got.ours ?? 0) / (got.values ?? 1));
      vsRowByRow.push((got.ours ?? 0) / (got.rowByRow ?? 1));
    }

    // ingestSnapshot: cold, then the same snapshots resent.
    const messages = (seq: number): SnapshotMessage[] =>
      hostIds.map((_, i) => ({
        type: 'snapshot',
        epoch: `bench-epoch-${seq}`,
        seq,
        snapshot: fleet.snapshot(i),
      }));
    const labels = { rack: 'bench' };
    const ingestAll = async (batch: SnapshotMessage[]) => {
      let written = 0;
      let unchanged = 0;
      const started = performance.now();
      for (let i = 0; i < batch.length; i++) {
        const hostId = hostIds[i];
        const message = batch[i];
        if (hostId === undefined || message === undefined) throw new Error(`no host ${i}`);
        const result = await ingestSnapshot(db, hostId, message, labels);
        written += result.devicesWritten;
        if (result.unchanged) unchanged += 1;
      }
      return {
        hostsPerSecond: batch.length / ((performance.now() - started) / 1000),
        written,
        unchanged,
      };
    };
    const cold: number[] = [];
    const resend: number[] = [];
    const resendRatios: number[] = [];
    let resendWrites = 0;
    let resendMisses = 0;
    for (let rep = 0; rep < sizes.repetitions; rep++) {
      // Cold as a new host is: no device, group, rollup or label row (the rollups left behind
      // would make every repetition after the first store its hosts the non-first way).
      await db.execute(
        sql`TRUNCATE devices, iommu_groups, host_labels, host_device_stats, host_blocking_reasons`,
      );
      await db.update(hosts).set({ inventoryHash: null, epoch: null, lastSeq: null });
      const first = await ingestAll(messages(1));
      const again = await ingestAll(messages(2));
      cold.push(first.hostsPerSecond);
      resend.push(again.hostsPerSecond);
      resendRatios.push(again.hostsPerSecond / first.hostsPerSecond);
      resendWrites += again.written;
      resendMisses += hostIds.length - again.unchanged;
    }

    const rowsPerHost = lists[0]?.length ?? 0;
    const round = (n: number, digits = 0) => Number(n.toFixed(digits));
    const p = `${driver}.`;
    return {
      metrics: {
        [`${p}ours_rows_per_s`]: round(median(samples.ours)),
        [`${p}values_rows_per_s`]: round(median(samples.values)),
        [`${p}row_by_row_rows_per_s`]: round(median(samples.rowByRow)),
        [`${p}ours_vs_values`]: round(median(vsValues), 2),
        [`${p}ours_vs_row_by_row`]: round(median(vsRowByRow), 1),
        [`${p}cold_ingest_hosts_per_s`]: round(median(cold), 1),
        [`${p}cold_ingest_rows_per_s`]: round(median(cold) * rowsPerHost),
        [`${p}resend_hosts_per_s`]: round(median(resend), 1),
        [`${p}resend_vs_cold`]: round(median(resendRatios), 2),
        [`${p}resend_device_writes`]: resendWrites,
      },
      targets: [
        target(
          `${driver}: ours vs multi-row VALUES`,
          round(median(vsValues), 2),
          OURS_VS_VALUES_TARGET,
          'x',
        ),
        target(
          `${driver}: ours vs row-by-row`,
          round(median(vsRowByRow), 1),
          OURS_VS_ROW_BY_ROW_TARGET,
          'x',
        ),
        {
          ...target(
            `${driver}: unchanged resend vs cold ingest (the full check; fleet-load judges the target)`,
            round(median(resendRatios), 2),
            RESEND_VS_COLD_TARGET,
            'x',
          ),
          informational: true,
        },
        targetAtMost(
          `${driver}: device rows written by an unchanged resend`,
          resendWrites,
          0,
          'rows',
        ),
        targetAtMost(
          `${driver}: resent snapshots not recognised as unchanged`,
          resendMisses,
          0,
          'hosts',
        ),
      ],
      details: {
        rowsPerHost,
        samples: { ...samples, vsValues, vsRowByRow, cold, resend, resendRatios },
      },
    };
  } finally {
    await handle.close();
    await bench.drop();
  }
}

export async function benchIngestWritePaths(opts: {
  quick: boolean;
  drivers: DbDriver[];
}): Promise<BenchResult> {
  const sizes = opts.quick ? QUICK : FULL;
  const fleet = await syntheticFleet();
  const metrics: Record<string, number | string> = {
    hosts: sizes.hosts,
    devices_per_host: fleet.devicesPerHost,
    row_by_row_hosts: sizes.rowByRowHosts,
    repetitions: sizes.repetitions,
  };
  const targets: Target[] = [];
  const details: Record<string, unknown> = { sizes, snapshotBytes: fleet.snapshotBytes };
  for (const driver of opts.drivers) {
    const figures = await benchDriver(driver, fleet, sizes);
    Object.assign(metrics, figures.metrics);
    targets.push(...figures.targets);
    details[driver] = figures.details;
  }
  return {
    scenario: 'ingest-write-paths',
    description:
      'device rows written by bulkUpsertDevices vs multi-row VALUES vs row-by-row (cold, one transaction per host), and an unchanged resend vs a cold ingestSnapshot',
    quick: opts.quick,
    metrics,
    targets,
    pass: targets.every((t) => t.pass),
    details,
  };
}

// Standalone: `npx tsx scenarios/ingest-write-paths.ts [--quick] [--driver postgres|pglite]`.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const argv = process.argv.slice(2);
  const i = argv.indexOf('--driver');
  const only = i >= 0 ? argv[i + 1] : undefined;
  const result = await benchIngestWritePaths({
    quick: argv.includes('--quick'),
    drivers: DRIVERS.filter((d) => only === undefined || d === only),
  });
  console.log(JSON.stringify({ metrics: result.metrics, targets: result.targets }, null, 2));
}
