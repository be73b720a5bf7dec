// Vitest global setup: builds dist/vfio-fleet-agent.mjs from the current sources, so the CLI
// tests exercise exactly what ships (one bundle run by bin/vfio-fleet-agent.mjs).
import { execFileSync } from 'node:child_process';
import path from 'node:path';

export default function setup(): void {
  const agentDir = path.resolve(import.meta.dirname, '../..');
  execFileSync(process.execPath, ['build.mjs'], { cwd: agentDir, stdio: 'inherit' });
}
