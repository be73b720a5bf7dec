// Where a cold ingest's CPU goes at scale, without the WebSocket and the load generator: N hosts’
// first snapshots through the server's ingestSnapshot, C transactions at a time, on a fresh
// PostgreSQL database; prints the wall time and the CPU seconds of this process and of every
// PostgreSQL process of the machine (read from /proc: run it on an otherwise idle machine).
// A diagnostic, not a bench with targets:
//   npx tsx scenarios/ingest-scale.ts [hosts=1000] [concurrency=8] [--keep]
// (--keep leaves the database for a look at its tables; drop it afterwards.)
import type { SnapshotMessage } from '@vfio-fleet/core';
import { hosts } from '@vfio-fleet/db';
import { ingestSnapshot } from '../../apps/web/src/gateway/ingest';
import { createBenchDatabase } from '../lib/bench-db';
import { postgresCpuSeconds } from '../lib/stats';
import { syntheticFleet } from '../lib/synthetic-fleet';

/** Seconds per role between two readings (a process that exited meanwhile is not counted). */
function cpuSince(before: Map<string, number>): string {
  const after = postgresCpuSeconds();
  const parts: string[] = [];
  let total = 0;
  for (const [role, seconds] of after) {
    const spent = Math.max(0, seconds - (before.get(role) ?? 0));
    total += spent;
    if (spent >= 0.05) parts.push(`${role} ${spent.toFixed(1)}`);
  }
  return `${total.toFixed(1)} s (${parts.join(', ')})`;
}

const n = Number(process.argv[2] ?? 1000);
const c = Number(process.argv[3] ?? 8);
const keep = process.argv.includes('--keep');
const fleet = await syntheticFleet(200);
const bench = await createBenchDatabase('postgres', 'scale');
const handle = await bench.open();
const db = handle.db;
const ids: string[] = [];
for (let i = 0; i < n; i += 500) {
  const rows = await db
    .insert(hosts)
    .values(
      Array.from({ length: Math.min(500, n - i) }, (_, k) => ({
        agentId: `a-${i + k}`,
        hostname: `h-${i + k}`,
        machineId: null,
      })),
    )
    .returning({ id: hosts.id });
  ids.push(...rows.map((r) => r.id));
}
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const pg0 = postgresCpuSeconds();
let next = 0;
await Promise.all(
  Array.from({ length: c }, async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const m: SnapshotMessage = {
        type: 'snapshot',
        epoch: 'e1',
        seq: 1,
        snapshot: fleet.snapshot(i),
      };
      await ingestSnapshot(db, ids[i] as string, m, { rack: `r${i % 10}` });
      if (i % 1000 === 999)
        console.log(`${i + 1} at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  }),
);
const wall = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
console.log(
  `${n} hosts, ${c} concurrent: ${wall.toFixed(1)} s, ${((n * 200) / wall).toFixed(0)} rows/s; node cpu ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s, postgres cpu ${cpuSince(pg0)}`,
);
await handle.close();
if (keep) console.log('kept', bench.env.DATABASE_URL);
else await bench.drop();
process.exit(0);
