// Imported by relative path, as in apps/agent: Node 20 cannot import the config package's .ts entry.
import { mergeConfig } from 'vitest/config';
import { packageTestConfig } from '../tooling/vitest/index';

export default mergeConfig(packageTestConfig({ testTimeout: 120_000 }), {
  test: {
    // dist/ is built by turbo (test depends on build); run alone, the setup builds it when stale.
    globalSetup: ['test/helpers/ensure-built.ts'],
    // The files share dist/ and each spawns 88 MB executables: one at a time on 2 cores.
    fileParallelism: false,
  },
});
