/**
 * The dashboard end to end: the real server and real agents (started by global setup, one fleet per
 * database) and Debian's Chromium (`/usr/bin/chromium`, never a downloaded browser). One worker:
 * CI is a 2-core machine that also runs the server, the agents and PostgreSQL.
 */
import { existsSync } from 'node:fs';
import { defineConfig } from '@playwright/test';

const CHROMIUM = '/usr/bin/chromium';
const PGLITE_SPECS_BESIDE_POSTGRES = [
  '02-overview.spec.ts',
  '03-host-rebind.spec.ts',
  '09-demo.spec.ts',
];
if (!existsSync(CHROMIUM)) {
  // Failing, not skipping: a suite that silently tests nothing would read as green.
  throw new Error(
    `${CHROMIUM} is missing: the e2e tests drive Debian's Chromium. Install it with \`apt-get install -y chromium\` (.ci/run does this in CI).`,
  );
}

export default defineConfig({
  testDir: './tests',
  outputDir: './test-results/artifacts',
  globalSetup: './src/global-setup.ts',
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: process.env.CI !== undefined,
  // Generous: a loaded 2-core machine stretches every page load and agent round trip.
  timeout: 180_000,
  expect: { timeout: 30_000 },
  reporter: [['list'], ['json', { outputFile: './test-results/playwright.json' }]],
  use: {
    browserName: 'chromium',
    headless: true,
    launchOptions: {
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    },
    viewport: { width: 1400, height: 900 },
    actionTimeout: 30_000,
    navigationTimeout: 60_000,
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    acceptDownloads: true,
  },
  projects: process.env.DATABASE_URL
    ? [
        // With PostgreSQL beside it (CI: a throwaway vf_e2e_* database) every spec runs there, and
        // PGlite, the embedded default a new user meets first, keeps the fleet's numbers, a job end
        // to end and the demo. The rest is the same browser on the same API, whose parity between
        // the two drivers apps/web's suite checks call by call; running it twice cost CI minutes.
        // One job end to end (the VF) is enough there: the GPU journey runs on PostgreSQL.
        {
          name: 'pglite',
          testMatch: PGLITE_SPECS_BESIDE_POSTGRES,
          grepInvert: /a GPU and its audio function/,
        },
        { name: 'postgres' },
      ]
    : [{ name: 'pglite' }],
});
