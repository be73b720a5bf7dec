// Where one 200-device snapshot's ingest spends its time: parse, assess, and each SQL statement of
// store(), on each driver. A diagnostic, not a bench with targets: `npx tsx scenarios/ingest-profile.ts`.
import {
  assessSnapshot,
  encodeMessage,
  parseAgentMessage,
  parseAgentMessageForServer,
  type SnapshotMessage,
} from '@vfio-fleet/core';
import {
  bulkUpsertDevices,
  type Database,
  type DbDriver,
  deleteDevicesNotIn,
  devices,
  hosts,
  syncHostLabels,
  syncIommuGroups,
} from '@vfio-fleet/db';
import { eq } from 'drizzle-orm';
import { ingestSnapshot } from '../../apps/web/src/gateway/ingest';
import { createBenchDatabase, selectedDrivers } from '../lib/bench-db';
import { compareInterleaved, median } from '../lib/measure';
import { factsOf, timeAsync, timeIt } from '../lib/profile';
import { syntheticFleet } from '../lib/synthetic-fleet';

async function main() {
  const fleet = await syntheticFleet(200);
  const message = (i: number): SnapshotMessage => ({
    type: 'snapshot',
    epoch: 'e1',
    seq: 1,
    snapshot: fleet.snapshot(i),
  });
  const frame = encodeMessage(message(0));
  console.log(`frame ${frame.length} bytes, ${fleet.devicesPerHost} devices`);
  const ms = {
    jsonParse: timeIt(30, () => JSON.parse(frame)),
    parseAgentMessage: timeIt(30, () => parseAgentMessage(frame)),
    assessSnapshot: timeIt(30, () => assessSnapshot(factsOf(fleet.snapshot(0)))),
    snapshotCopy: timeIt(30, () => fleet.snapshot(0)),
  };
  console.log('cpu ms (median):', ms);
  // The server's parse (readiness dropped unvalidated) against the full one, interleaved.
  const parse = compareInterleaved({
    ours: () => (parseAgentMessageForServer(frame).ok ? 1 : 0),
    baseline: () => (parseAgentMessage(frame).ok ? 1 : 0),
    repetitions: 6,
    minMs: 400,
  });
  console.log(
    `parse ms: parseAgentMessageForServer ${(1000 / parse.oursMedian).toFixed(2)}, parseAgentMessage ${(1000 / parse.baselineMedian).toFixed(2)}, speed-up ${parse.ratio.toFixed(2)}x`,
  );

  for (const driver of selectedDrivers(process.argv) as DbDriver[]) {
    const bench = await createBenchDatabase(driver, 'profile');
    const handle = await bench.open();
    const db = handle.db;
    try {
      const newHost = async (i: number) => {
        const [row] = await db
          .insert(hosts)
          .values({ agentId: `agent-${i}`, hostname: `bench-${i}`, machineId: null })
          .returning({ id: hosts.id });
        if (!row) throw new Error('no host');
        return row.id;
      };
      const perStatement: Record<string, number[]> = {};
      const add = (k: string, v: number) => {
        perStatement[k] ??= [];
        perStatement[k].push(v);
      };
      for (let i = 0; i < 8; i++) {
        const hostId = await newHost(i);
        const assessed = assessSnapshot(factsOf(fleet.snapshot(i)));
        await db.transaction(async (tx: Database) => {
          add(
            'updateHost',
            await timeAsync(() =>
              tx
                .update(hosts)
                .set({ host: assessed.host, problems: assessed.problems, updatedAt: new Date() })
                .where(eq(hosts.id, hostId)),
            ),
          );
          add(
            'bulkUpsertDevices',
            await timeAsync(() => bulkUpsertDevices(tx, hostId, assessed.devices)),
          );
          add(
            'deleteDevicesNotIn',
            await timeAsync(() =>
              deleteDevicesNotIn(
                tx,
                hostId,
                assessed.devices.map((d) => d.address),
              ),
            ),
          );
          add(
            'syncIommuGroups',
            await timeAsync(() => syncIommuGroups(tx, hostId, assessed.groups)),
          );
          add('syncHostLabels', await timeAsync(() => syncHostLabels(tx, hostId, { rack: 'r1' })));
        });
        // Resend of the same devices: the upsert's no-op path.
        await db.transaction(async (tx: Database) => {
          add(
            'bulkUpsertDevices(resend)',
            await timeAsync(() => bulkUpsertDevices(tx, hostId, assessed.devices)),
          );
        });
      }
      const cold: number[] = [];
      const resend: number[] = [];
      for (let i = 100; i < 108; i++) {
        const hostId = await newHost(i);
        const m = message(i);
        cold.push(await timeAsync(() => ingestSnapshot(db, hostId, m, { rack: 'r1' })));
        const again = message(i);
        resend.push(await timeAsync(() => ingestSnapshot(db, hostId, again, { rack: 'r1' })));
      }
      const med = Object.fromEntries(
        Object.entries(perStatement).map(([k, v]) => [k, Number(median(v.slice(1)).toFixed(2))]),
      );
      console.log(`${driver} per statement ms (median):`, med);
      console.log(
        `${driver} ingestSnapshot ms: cold ${median(cold.slice(1)).toFixed(1)}, resend ${median(resend.slice(1)).toFixed(1)}`,
      );
      const [n] = await db.select({ n: devices.address }).from(devices).limit(1);
      void n;
    } finally {
      await handle.close();
      await bench.drop();
    }
  }
}

await main();
