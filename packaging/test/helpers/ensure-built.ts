// Vitest global setup: runs build.mjs unless dist/ is newer than every input of the build, so
// `npx vitest run` alone tests what the sources build, and under turbo (which built it) costs nothing.
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

const packagingDir = path.resolve(import.meta.dirname, '../..');
const repo = path.resolve(packagingDir, '..');
const INPUTS = [
  'packaging/build.mjs',
  'packaging/src',
  'packaging/systemd',
  'packaging/debian',
  'packaging/install',
  'apps/agent/src',
  'apps/agent/package.json',
  'packages/core/src',
];

function newestMtime(file: string): number {
  const info = statSync(file);
  if (!info.isDirectory()) return info.mtimeMs;
  return Math.max(
    info.mtimeMs,
    ...readdirSync(file).map((entry) => newestMtime(path.join(file, entry))),
  );
}

export default function setup(): void {
  let built = 0;
  try {
    built = statSync(path.join(packagingDir, 'dist/manifest.json')).mtimeMs;
  } catch {
    // Not built yet.
  }
  const newestInput = Math.max(...INPUTS.map((input) => newestMtime(path.join(repo, input))));
  if (built > newestInput) return;
  execFileSync(process.execPath, ['build.mjs'], { cwd: packagingDir, stdio: 'inherit' });
}
