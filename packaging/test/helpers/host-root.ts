// A fixture host tree for `scan --root`, and the scan of it without Node on the PATH.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { readModulesAlias } from '@vfio-fleet/testdata';

export async function buildFixtureRoot(dir: string): Promise<string> {
  const root = path.join(dir, 'host-dual-gpu');
  await buildScenario(root, 'dual-gpu', {
    modulesAlias: readModulesAlias('6.12.117+deb12-amd64+vfio-variants'),
  });
  return root;
}

/**
 * Runs an executable with an environment that has nothing but a PATH leading nowhere: no node,
 * no shell lookups, no NODE_OPTIONS. Whatever runs, runs on its own.
 */
export function runWithoutNode(executable: string, args: readonly string[]) {
  return spawnSync(executable, args, {
    env: { PATH: '/nonexistent' },
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 60_000,
  });
}
