// Imported by relative path, not as '@vfio-fleet/vitest-config': vite's config bundler leaves
// packages found through node_modules external, and Node 20 cannot import that package's .ts entry.
import { mergeConfig } from 'vitest/config';
import { packageTestConfig } from '../../tooling/vitest/index';

export default mergeConfig(packageTestConfig({ testTimeout: 60_000 }), {
  // The tests run real agents from the built bundle; build it once if `npm install` did not.
  test: { globalSetup: ['test/helpers/build-agent.ts'] },
});
