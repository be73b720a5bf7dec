// Entry point of `npm run bench [-- --quick] [--only NAME,...] [--driver postgres|pglite]
// [--agents N] [--no-fail]`: runs the benches, writes each scenario's result to
// bench/results/<scenario>.json and prints a summary. Exits non-zero when a target is missed
// (unless --no-fail, for CI, where only a crash should fail the run), so a person running it
// sees a regression without reading the numbers.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { DbDriver } from '@vfio-fleet/db';
import { benchAliasMatch } from './alias-match';
import { DRIVERS } from './lib/bench-db';
import type { BenchResult } from './lib/measure';
import { benchDashboardQueries } from './scenarios/dashboard-queries';
import { runFleetLoad } from './scenarios/fleet-load';
import { benchIngestWritePaths } from './scenarios/ingest-write-paths';

interface RunOptions {
  quick: boolean;
  drivers: DbDriver[];
  agents?: number;
}

/** Each bench by name; one may produce several scenarios' results. */
const BENCHES: Record<string, (opts: RunOptions) => Promise<BenchResult | BenchResult[]>> = {
  'alias-match': ({ quick }) => benchAliasMatch({ quick }),
  'ingest-write-paths': ({ quick, drivers }) => benchIngestWritePaths({ quick, drivers }),
  'dashboard-queries': ({ quick, drivers }) => benchDashboardQueries({ quick, drivers }),
  fleet: ({ quick, drivers, agents }) =>
    runFleetLoad({ quick, drivers, scale: agents === undefined ? undefined : { agents } }),
};

function formatNumber(value: number | string): string {
  return typeof value === 'number' ? value.toLocaleString('en-US') : value;
}

function printResult(result: BenchResult): void {
  console.log(`\n${result.scenario}${result.quick ? ' (quick)' : ''}: ${result.description}`);
  for (const [name, value] of Object.entries(result.metrics)) {
    console.log(`  ${name}: ${formatNumber(value)}`);
  }
  for (const t of result.targets) {
    console.log(
      `  [${t.informational === true ? 'INFO' : t.pass ? 'PASS' : 'FAIL'}] ${t.name}: ${formatNumber(t.measured)} ${t.unit} (target ${t.comparison} ${formatNumber(t.threshold)})`,
    );
  }
}

const USAGE =
  'usage: npm run bench -- [--quick] [--only NAME,...] [--driver postgres|pglite] [--agents N] [--no-fail]';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      driver: { type: 'string' },
      agents: { type: 'string' },
      'no-fail': { type: 'boolean', default: false },
    },
  });
  const only = values.only?.split(',') ?? Object.keys(BENCHES);
  const unknown = only.filter((name) => !(name in BENCHES));
  if (unknown.length > 0) {
    throw new Error(
      `unknown bench ${unknown.join(', ')}; known: ${Object.keys(BENCHES).join(', ')}\n${USAGE}`,
    );
  }
  const drivers = DRIVERS.filter((d) => values.driver === undefined || values.driver === d);
  if (drivers.length === 0) {
    throw new Error(`--driver must be postgres or pglite, not ${values.driver}\n${USAGE}`);
  }
  const agents = values.agents === undefined ? undefined : Number(values.agents);
  if (agents !== undefined && (!Number.isInteger(agents) || agents < 1)) {
    throw new Error(`--agents must be a positive whole number, not ${values.agents}\n${USAGE}`);
  }
  const resultsDir = path.join(import.meta.dirname, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  };
  let allPass = true;
  const started = performance.now();
  for (const name of only) {
    const bench = BENCHES[name];
    if (bench === undefined) continue;
    const produced = await bench({ quick: values.quick, drivers, agents });
    for (const result of Array.isArray(produced) ? produced : [produced]) {
      writeFileSync(
        path.join(resultsDir, `${result.scenario}.json`),
        `${JSON.stringify({ ...result, machine, recordedAt: new Date().toISOString() }, null, 2)}\n`,
      );
      printResult(result);
      allPass &&= result.pass;
    }
  }
  const seconds = Math.round((performance.now() - started) / 1000);
  console.log(`\n${allPass ? 'All targets met' : 'Some targets were missed'} (${seconds} s).`);
  if (!allPass && !values['no-fail']) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 2;
});
