// Entry point of `npm run bench [-- --quick]`: runs every bench, writes each result to
// bench/results/<scenario>.json and prints a summary. Exits non-zero when a target is missed, so
// CI or a person running it sees a regression without reading the numbers.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { benchAliasMatch } from './alias-match';
import type { BenchResult } from './lib/measure';

const BENCHES: ReadonlyArray<(opts: { quick: boolean }) => Promise<BenchResult>> = [
  benchAliasMatch,
];

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
      `  [${t.pass ? 'PASS' : 'FAIL'}] ${t.name}: ${formatNumber(t.measured)} ${t.unit} (target >= ${formatNumber(t.threshold)})`,
    );
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const resultsDir = path.join(import.meta.dirname, 'results');
  mkdirSync(resultsDir, { recursive: true });
  let allPass = true;
  for (const bench of BENCHES) {
    const result = await bench({ quick });
    writeFileSync(
      path.join(resultsDir, `${result.scenario}.json`),
      `${JSON.stringify({ ...result, recordedAt: new Date().toISOString() }, null, 2)}\n`,
    );
    printResult(result);
    allPass &&= result.pass;
  }
  console.log(`\n${allPass ? 'All targets met.' : 'Some targets were missed.'}`);
  if (!allPass) process.exitCode = 1;
}

await main();
