#!/usr/bin/env node
// Thin launcher: the agent ships as one bundle (see build.mjs), built by `npm install` (prepare).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const bundle = fileURLToPath(new URL('../dist/vfio-fleet-agent.mjs', import.meta.url));
if (!existsSync(bundle)) {
  process.stderr.write(
    `vfio-fleet-agent: ${bundle} is missing; run \`npm run build\` at the repository root first.\n`,
  );
  process.exit(1);
}
await import(bundle);
