// Imported by relative path, not as '@vfio-fleet/vitest-config': vite's config bundler leaves
// packages found through node_modules external, and Node 20 cannot import that package's .ts
// entry itself (ERR_UNKNOWN_FILE_EXTENSION), so `npx vitest run` failed before any test ran.
import { mergeConfig } from 'vitest/config';
import { packageTestConfig } from '../../tooling/vitest/index';

export default mergeConfig(packageTestConfig({ testTimeout: 60_000 }), {
  // The CLI tests run the real bundle; build it once, before any test file starts.
  test: { globalSetup: ['test/helpers/build-bundle.ts'] },
});
