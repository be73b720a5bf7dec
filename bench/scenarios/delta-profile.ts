// Where one delta's ingest spends its time: a 200-device host, one GPU's driver_override flipping
// per delta, as the steady state sends them. The whole ingestDelta per driver, then its CPU steps
// one by one. A diagnostic, not a bench with targets:
// `npx tsx scenarios/delta-profile.ts [--driver postgres|pglite]` (add `--cpu-prof` to node's
// flags for a profile).
import {
  applyDelta,
  assessSnapshot,
  type DeltaMessage,
  encodeMessage,
  hostFactsSnapshotSchema,
  parseAgentMessageForServer,
} from '@vfio-fleet/core';
import {
  bulkUpsertDevices,
  type Database,
  type DbDriver,
  deleteDevicesNotIn,
  hosts,
  loadHostTopology,
  syncHostRollups,
} from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import { ingestDelta, ingestSnapshot, inventoryHash } from '../../apps/web/src/gateway/ingest';
import { loadSnapshot } from '../../apps/web/src/gateway/stored-state';
import { createBenchDatabase, selectedDrivers } from '../lib/bench-db';
import { median } from '../lib/measure';
import { factsOf, timeIt } from '../lib/profile';
import { syntheticFleet } from '../lib/synthetic-fleet';

async function main() {
  const fleet = await syntheticFleet(200);
  const DELTAS = 60;
  for (const driver of selectedDrivers(process.argv) as DbDriver[]) {
    const bench = await createBenchDatabase(driver, 'delta');
    const handle = await bench.open();
    const db = handle.db;
    try {
      const [row] = await db
        .insert(hosts)
        .values({ agentId: 'agent-0', hostname: 'bench-0', machineId: null })
        .returning({ id: hosts.id });
      if (!row) throw new Error('no host');
      const hostId = row.id;
      await ingestSnapshot(
        db,
        hostId,
        { type: 'snapshot', epoch: 'e1', seq: 1, snapshot: fleet.snapshot(0) },
        { rack: 'r1' },
      );
      const samples: number[] = [];
      for (let change = 1; change <= DELTAS; change++) {
        const frame = encodeMessage({
          type: 'delta',
          epoch: 'e1',
          baseSeq: change,
          seq: change + 1,
          delta: fleet.delta(0, change),
        });
        const t = performance.now();
        const parsed = parseAgentMessageForServer(frame);
        if (!parsed.ok || parsed.message.type !== 'delta') throw new Error('delta did not parse');
        const outcome = await ingestDelta(db, hostId, parsed.message as DeltaMessage);
        samples.push(performance.now() - t);
        if (!outcome.applied) throw new Error(outcome.reason);
      }
      console.log(
        `${driver}: parse + ingestDelta ms median ${median(samples.slice(5)).toFixed(2)} ` +
          `(p90 ${samples
            .slice(5)
            .sort((a, b) => a - b)
            [Math.floor(0.9 * (samples.length - 5))]?.toFixed(2)})`,
      );

      // The CPU steps of one delta, each alone (the same order ingestDelta runs them).
      const [stored] = await db.select().from(hosts).where(eq(hosts.id, hostId));
      if (stored?.host == null) throw new Error('no stored host');
      const load = async () => {
        const loaded = await loadSnapshot(db, hostId, stored.host ?? fleet.snapshot(0).host, []);
        if (loaded === null) throw new Error('the stored host section does not parse');
        return loaded.snapshot;
      };
      const base = await load();
      const loadSamples: number[] = [];
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        await load();
        loadSamples.push(performance.now() - t);
      }
      const delta = fleet.delta(0, DELTAS + 1);
      const next = applyDelta(base, delta, new Date().toISOString());
      const assessed = assessSnapshot(factsOf(next));
      const topologySamples: number[] = [];
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        await loadHostTopology(db, hostId);
        topologySamples.push(performance.now() - t);
      }
      console.log(`${driver}: CPU steps ms (median):`, {
        // What a delta of devices only reads (the links and the listing, then its scope's rows)...
        loadHostTopology: Number(median(topologySamples.slice(5)).toFixed(2)),
        // ...and what one that changes the host section reads, to re-assess the whole host.
        loadSnapshot: Number(median(loadSamples.slice(5)).toFixed(2)),
        applyDelta: timeIt(30, () => applyDelta(base, delta, new Date().toISOString())),
        schemaOrderParse: timeIt(30, () => hostFactsSnapshotSchema.parse(factsOf(next))),
        assessSnapshot: timeIt(30, () => assessSnapshot(factsOf(next))),
        inventoryHash: timeIt(30, () => inventoryHash(assessed, { rack: 'r1' })),
      });

      // store()'s statements for a one-device delta, each timed inside one transaction, and the
      // commit with and without waiting for the WAL flush.
      const per: Record<string, number[]> = {};
      const add = (k: string, v: number) => {
        per[k] ??= [];
        per[k].push(v);
      };
      const timed = async (k: string, fn: () => Promise<unknown>) => {
        const t = performance.now();
        await fn();
        add(k, performance.now() - t);
      };
      for (let i = 0; i < 40; i++) {
        const state = applyDelta(base, fleet.delta(0, i + 1), new Date().toISOString());
        const a = assessSnapshot(factsOf(state));
        const changedGpu = a.devices.filter((d) => d.driverOverride === 'vfio-pci');
        const asyncCommit = i % 2 === 1;
        let inside = 0;
        const t0 = performance.now();
        await db.transaction(async (tx: Database) => {
          const t = performance.now();
          await timed('selectForUpdate', () =>
            tx.select().from(hosts).where(eq(hosts.id, hostId)).for('update'),
          );
          await timed('updateHost', () =>
            tx
              .update(hosts)
              .set({ host: a.host, problems: a.problems, updatedAt: new Date() })
              .where(eq(hosts.id, hostId)),
          );
          await timed('bulkUpsertDevices(1-2)', () =>
            bulkUpsertDevices(
              tx,
              hostId,
              changedGpu.length > 0 ? changedGpu : a.devices.slice(0, 1),
            ),
          );
          await timed('deleteDevicesNotIn(200)', () =>
            deleteDevicesNotIn(
              tx,
              hostId,
              a.devices.map((d) => d.address),
            ),
          );
          await timed('syncHostRollups', () => syncHostRollups(tx, hostId));
          if (asyncCommit) await tx.execute(sql`SET LOCAL synchronous_commit = off`);
          inside = performance.now() - t;
        });
        add(
          asyncCommit ? 'begin+commit(async)' : 'begin+commit(sync)',
          performance.now() - t0 - inside,
        );
      }
      console.log(
        `${driver}: store() statements ms (median):`,
        Object.fromEntries(
          Object.entries(per).map(([k, v]) => [k, Number(median(v.slice(2)).toFixed(2))]),
        ),
      );
    } finally {
      await handle.close();
      await bench.drop();
    }
  }
}

await main();
