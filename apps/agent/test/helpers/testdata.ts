// Locates ../shared/testdata (real modules.alias files, a real sysfs snapshot) beside the
// checkout; VFIO_FLEET_TESTDATA overrides it. Missing data fails loudly instead of testing nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { repoRoot } from './run-agent';

export const testdataDir =
  process.env.VFIO_FLEET_TESTDATA ?? path.resolve(repoRoot, '../shared/testdata');

if (!existsSync(testdataDir)) {
  throw new Error(`test data not found at ${testdataDir} (set VFIO_FLEET_TESTDATA)`);
}

export function testdataPath(...parts: string[]): string {
  return path.join(testdataDir, ...parts);
}

/** A real modules.alias (`modules-alias/<label>.alias.gz`), gunzipped. */
export function readModulesAlias(label: string): string {
  return gunzipSync(readFileSync(testdataPath('modules-alias', `${label}.alias.gz`))).toString(
    'utf8',
  );
}

/** Unpacks a tar.gz from the test data into a fresh temp dir (with the system's tar). */
export async function unpackTestdata(...parts: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'agent-testdata-'));
  execFileSync('tar', ['-xzf', testdataPath(...parts), '-C', dir]);
  return dir;
}
