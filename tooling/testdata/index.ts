// Locates ../shared/testdata (real Debian modules.alias files, pci.ids, a real sysfs snapshot)
// beside the repository checkout, wherever the checkout is; VFIO_FLEET_TESTDATA overrides it.
// Tests fail loudly when it is missing rather than silently testing nothing.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

export const testdataDir =
  process.env.VFIO_FLEET_TESTDATA ?? path.resolve(repoRoot, '../shared/testdata');

if (!existsSync(testdataDir)) {
  throw new Error(`test data not found at ${testdataDir} (set VFIO_FLEET_TESTDATA)`);
}

export function testdataPath(...parts: string[]): string {
  return path.join(testdataDir, ...parts);
}

/** Reads a test data file, gunzipping `.gz` files. */
export function readTestdata(...parts: string[]): string {
  const file = testdataPath(...parts);
  const raw = readFileSync(file);
  return (file.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
}

/** Labels of the real modules.alias files (`<label>.alias.gz`), largest vfio_pci set first. */
export const MODULES_ALIAS_LABELS = [
  '6.12.117+deb12-amd64+vfio-variants',
  '6.1.0-56-amd64',
  '6.1.0-56-arm64',
  '6.12.117+deb12-amd64',
  '6.12.117+deb13-arm64',
  '7.2.13+deb14-amd64',
  '7.2.13+deb14-arm64',
] as const;

/** A real modules.alias (`modules-alias/<label>.alias.gz`), gunzipped. */
export function readModulesAlias(label: string): string {
  return readTestdata('modules-alias', `${label}.alias.gz`);
}

/** Unpacks a tar.gz from the test data into a fresh temp dir (with the system's tar). */
export async function unpackTestdata(...parts: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-testdata-'));
  execFileSync('tar', ['-xzf', testdataPath(...parts), '-C', dir]);
  return dir;
}
