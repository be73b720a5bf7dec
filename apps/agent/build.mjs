// Bundles the agent and everything it imports (core, pino, zod) into one ESM file, so a host needs
// only a node binary and this file: no node_modules, no TypeScript at run time.
import { build } from 'esbuild';

// Paths relative to this file, so the build works from any working directory.
const here = import.meta.dirname;

await build({
  entryPoints: [`${here}/src/main.ts`],
  outfile: `${here}/dist/vfio-fleet-agent.mjs`,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  legalComments: 'none',
  // Some bundled dependencies are CommonJS and call require(); ESM output has no require of its own.
  banner: {
    js: "import { createRequire as __vfCreateRequire } from 'node:module'; const require = __vfCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
