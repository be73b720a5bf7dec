// The dashboard's read path at fleet scale: fleet.summary, fleet.capacity and devices.search
// (their domain functions, called in-process on the database, without HTTP or load) against a
// database seeded with N hosts x 200 devices. Baseline: the same answers computed the old way,
// the direct aggregate over devices (dashboard-baseline.ts), interleaved with ours in the same
// run. Targets, per procedure and case: p95 <= 50 ms and p99 <= 100 ms.
//
// Ours runs `calls` times per case; the baseline, which reads every device row, runs only every
// BASELINE_EVERY-th call (a 1M-row aggregate takes seconds), interleaved so both see the same
// machine. The first call of each case also checks that ours answers exactly what the baseline
// answers: the rollups must change the cost, never the figures.
import { isDeepStrictEqual } from 'node:util';
import type { Database, DbDriver } from '@vfio-fleet/db';
import { fleetCapacity, fleetSummary, searchDevices } from '@vfio-fleet/web';
import { createBenchDatabase } from '../lib/bench-db';
import { type BenchResult, median, type Target, targetAtMost } from '../lib/measure';
import { type LatencySummary, round, summarize } from '../lib/stats';
import { syntheticFleet } from '../lib/synthetic-fleet';
import { baselineCapacity, baselineSearch, baselineSummary } from './dashboard-baseline';
import { seedDashboardFleet } from './dashboard-seed';

const P95_TARGET_MS = 50;
const P99_TARGET_MS = 100;
const BASELINE_EVERY = 10;

/** Hosts per driver: the 5,000 on PostgreSQL; PGlite holds less in reasonable time. */
export const FULL_HOSTS: Record<DbDriver, number> = { postgres: 5_000, pglite: 1_000 };
export const QUICK_HOSTS: Record<DbDriver, number> = { postgres: 150, pglite: 60 };

interface QueryCase {
  procedure: 'fleet.summary' | 'fleet.capacity' | 'devices.search';
  name: string;
  ours: (db: Database) => Promise<unknown>;
  baseline: (db: Database) => Promise<unknown>;
}

/** The cursor of the page after `pages` pages of an unfiltered search. */
async function cursorAfter(db: Database, pages: number, limit: number): Promise<string | null> {
  let cursor: string | null = null;
  for (let i = 0; i < pages; i++) {
    cursor = (await searchDevices(db, { limit, cursor })).nextCursor;
    if (cursor === null) break;
  }
  return cursor;
}

async function cases(db: Database, hosts: number): Promise<QueryCase[]> {
  const rack = { rack: 'r07' };
  const cluster = { cluster: 'b' };
  const list: QueryCase[] = [];
  const summary = (name: string, input: Parameters<typeof fleetSummary>[1]) =>
    list.push({
      procedure: 'fleet.summary',
      name,
      ours: (d) => fleetSummary(d, input),
      baseline: (d) => baselineSummary(d, input),
    });
  const capacity = (name: string, input: Parameters<typeof fleetCapacity>[1]) =>
    list.push({
      procedure: 'fleet.capacity',
      name,
      ours: (d) => fleetCapacity(d, input),
      baseline: (d) => baselineCapacity(d, input),
    });
  const search = (name: string, input: Parameters<typeof searchDevices>[1]) =>
    list.push({
      procedure: 'devices.search',
      name,
      ours: (d) => searchDevices(d, input),
      baseline: (d) => baselineSearch(d, input),
    });
  summary('all hosts', {});
  summary('label rack=r07', { labels: rack });
  summary('label cluster=b', { labels: cluster });
  capacity('all hosts', {});
  capacity('label cluster=b', { labels: cluster });
  capacity('by NUMA, split by rack', { groupBy: 'numa', labelKey: 'rack' });
  capacity('hostname contains "-00"', { hostSearch: '-00' });
  search('page 1', { limit: 50 });
  const later = await cursorAfter(db, 20, 50);
  search('page 21 (cursor)', { limit: 50, cursor: later });
  // A cursor near the end of the fleet: keyset pages cost the same anywhere.
  const lastHost = `bench-${String(Math.max(0, hosts - 2)).padStart(5, '0')}`;
  const deep = Buffer.from(
    JSON.stringify([lastHost, '00000000-0000-0000-0000-000000000000', '']),
  ).toString('base64url');
  search('cursor near the end', { limit: 50, cursor: deep });
  search('status blocked', { status: 'blocked', limit: 50 });
  search('status bound', { status: 'bound', limit: 50 });
  search('vendor:device 10de:1eb8', { vendorId: '10de', deviceId: '1eb8', limit: 50 });
  search('text "nvidia"', { q: 'nvidia', limit: 50 });
  search('text "41:00.1"', { q: '41:00.1', limit: 50 });
  search('label rack=r07', { labels: rack, limit: 50 });
  search('status ready, label cluster=b', { status: 'ready', labels: cluster, limit: 50 });
  return list;
}

export interface CaseResult {
  driver: DbDriver;
  procedure: string;
  name: string;
  calls: number;
  oursMs: LatencySummary;
  baselineMs: { calls: number; p50: number; max: number };
  /** Baseline median / ours median. */
  ratio: number;
  sameAnswer: boolean;
}

async function timed(f: () => Promise<unknown>): Promise<{ ms: number; value: unknown }> {
  const start = performance.now();
  const value = await f();
  return { ms: performance.now() - start, value };
}

/** Runs every case `calls` times (ours) against the baseline every BASELINE_EVERY-th call. */
export async function measureDashboardQueries(
  db: Database,
  driver: DbDriver,
  options: { hosts: number; calls: number; baselineCalls: number },
): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  for (const c of await cases(db, options.hosts)) {
    // Warm-up and correctness: the first answer of each must be the baseline's.
    const first = await timed(() => c.ours(db));
    const reference = await timed(() => c.baseline(db));
    const sameAnswer = isDeepStrictEqual(first.value, reference.value);
    const ours: number[] = [];
    const baseline: number[] = [reference.ms];
    for (let i = 0; i < options.calls; i++) {
      const baselineTurn =
        baseline.length < options.baselineCalls && i % BASELINE_EVERY === BASELINE_EVERY - 1;
      // Alternate which goes first, so neither always runs on a cache the other warmed.
      if (baselineTurn && i % 2 === 0) baseline.push((await timed(() => c.baseline(db))).ms);
      ours.push((await timed(() => c.ours(db))).ms);
      if (baselineTurn && i % 2 === 1) baseline.push((await timed(() => c.baseline(db))).ms);
    }
    const oursMedian = median(ours);
    const baselineMedian = median(baseline);
    results.push({
      driver,
      procedure: c.procedure,
      name: c.name,
      calls: ours.length,
      oursMs: summarize(ours),
      baselineMs: {
        calls: baseline.length,
        p50: round(baselineMedian),
        max: round(Math.max(...baseline)),
      },
      ratio: round(baselineMedian / oursMedian),
      sameAnswer,
    });
  }
  return results;
}

export async function benchDashboardQueries(opts: {
  quick: boolean;
  drivers: DbDriver[];
  hosts?: number;
}): Promise<BenchResult> {
  const fleet = await syntheticFleet();
  const calls = opts.quick ? 10 : 50;
  const baselineCalls = opts.quick ? 2 : 5;
  const all: CaseResult[] = [];
  const seeds: Record<string, unknown> = {};
  const targets: Target[] = [];
  const metrics: Record<string, number | string> = {};
  for (const driver of opts.drivers) {
    const hosts = opts.hosts ?? (opts.quick ? QUICK_HOSTS : FULL_HOSTS)[driver];
    const bench = await createBenchDatabase(driver, 'dashboard');
    try {
      const handle = await bench.open();
      try {
        const seeded = await seedDashboardFleet(handle.db, { hosts, fleet });
        seeds[driver] = { hosts: seeded.hosts, devices: seeded.devices, seconds: seeded.seconds };
        metrics[`${driver} device rows`] = seeded.devices;
        const results = await measureDashboardQueries(handle.db, driver, {
          hosts,
          calls,
          baselineCalls,
        });
        all.push(...results);
        for (const procedure of ['fleet.summary', 'fleet.capacity', 'devices.search']) {
          const of = results.filter((r) => r.procedure === procedure);
          const worstP95 = Math.max(...of.map((r) => r.oursMs.p95));
          const worstP99 = Math.max(...of.map((r) => r.oursMs.p99));
          metrics[`${driver} ${procedure} p50 ms (median of cases)`] = round(
            median(of.map((r) => r.oursMs.p50)),
          );
          metrics[`${driver} ${procedure} baseline/ours (median of cases)`] = round(
            median(of.map((r) => r.ratio)),
          );
          targets.push(
            targetAtMost(`${driver} ${procedure} p95 (worst case)`, worstP95, P95_TARGET_MS, 'ms'),
            targetAtMost(`${driver} ${procedure} p99 (worst case)`, worstP99, P99_TARGET_MS, 'ms'),
          );
        }
        const wrong = results.filter((r) => !r.sameAnswer).map((r) => `${r.procedure} ${r.name}`);
        metrics[`${driver} answers equal to the baseline`] =
          wrong.length === 0 ? 'all' : `not: ${wrong.join(', ')}`;
        targets.push(
          targetAtMost(`${driver} answers differing from the baseline`, wrong.length, 0, ''),
        );
      } finally {
        await handle.close();
      }
    } finally {
      await bench.drop();
    }
  }
  return {
    scenario: 'dashboard-queries',
    description:
      'fleet.summary, fleet.capacity and devices.search at N hosts x 200 devices, against the direct aggregate over devices',
    quick: opts.quick,
    metrics,
    targets,
    pass: targets.every((t) => t.pass),
    details: { seeds, cases: all, callsPerCase: calls },
  };
}
