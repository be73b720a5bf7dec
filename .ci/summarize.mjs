// Adds up the vitest JSON reports of every package and the e2e suite's Playwright report into one
// closing line, "N passed, N failed", so a reader (and CI's log scanner) sees the whole suite's
// result at a glance.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

let passed = 0;
let failed = 0;
let skipped = 0;
const dirs = ['kernel-test', 'packaging'];
for (const group of ['packages', 'apps']) {
  if (existsSync(group)) dirs.push(...readdirSync(group).map((name) => path.join(group, name)));
}
for (const dir of dirs) {
  const file = path.join(dir, 'test-results', 'vitest.json');
  if (!existsSync(file)) continue;
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests ?? 0;
  failed += report.numFailedTests ?? 0;
  skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
}
// The e2e suite's Playwright JSON report: `expected` passed, `flaky` passed on a retry,
// `unexpected` failed.
const e2eReport = path.join('e2e', 'test-results', 'playwright.json');
if (existsSync(e2eReport)) {
  const stats = JSON.parse(readFileSync(e2eReport, 'utf8')).stats ?? {};
  passed += (stats.expected ?? 0) + (stats.flaky ?? 0);
  failed += stats.unexpected ?? 0;
  skipped += stats.skipped ?? 0;
}
console.log(`Tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
