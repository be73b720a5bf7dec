/**
 * Starts one fleet per Playwright project (PGlite always; PostgreSQL too when DATABASE_URL is set)
 * before any test, writes what the tests need to `<project>.json` in a temp dir named by
 * VFIO_FLEET_E2E_DIR (workers inherit it), and returns the teardown that stops everything and
 * removes the temp dir, also when a test failed.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { FullConfig } from '@playwright/test';
import { type RunningFleet, startFleet } from './fleet';
import { DATABASES, FLEET_DIR_ENV, fleetInfoPath, SCREENSHOTS_DIR } from './fleet-info';

export default async function globalSetup(config: FullConfig): Promise<() => Promise<void>> {
  // This run's screenshots only (Playwright cleans its own output dir, which is beside them).
  await rm(SCREENSHOTS_DIR, { recursive: true, force: true });
  const baseDir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-e2e-'));
  process.env[FLEET_DIR_ENV] = baseDir;
  const wanted = DATABASES.filter((kind) => config.projects.some((p) => p.name === kind));
  const fleets: RunningFleet[] = [];
  const teardown = async () => {
    for (const fleet of fleets.splice(0)) await fleet.stop();
    await rm(baseDir, { recursive: true, force: true });
  };
  try {
    // One after the other: on a 2-core machine two Next.js servers preparing at once only make
    // both slower, and a failure in the first says more without the second's noise.
    for (const kind of wanted) {
      const fleet = await startFleet(kind, baseDir);
      fleets.push(fleet);
      await writeFile(fleetInfoPath(baseDir, kind), JSON.stringify(fleet.info, null, 2));
    }
  } catch (error) {
    await teardown();
    throw error;
  }
  return teardown;
}
