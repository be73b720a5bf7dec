// Vitest global setup: the tests run real agents from the agent's bundle. Root `npm install`
// builds it (prepare); build it here only when it is missing, e.g. after `--ignore-scripts`.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

export default function setup(): void {
  const agentDir = path.resolve(import.meta.dirname, '../../../agent');
  if (existsSync(path.join(agentDir, 'dist/vfio-fleet-agent.mjs'))) return;
  execFileSync(process.execPath, ['build.mjs'], { cwd: agentDir, stdio: 'inherit' });
}
