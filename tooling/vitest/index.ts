// One vitest configuration for every package, so CI can add up the results of all of them:
// under CI each package also writes a JSON report that .ci/summarize.mjs reads.
import { defineConfig } from 'vitest/config';

export function packageTestConfig(options: { testTimeout?: number } = {}) {
  return defineConfig({
    test: {
      include: ['test/**/*.test.ts'],
      // Generous: on 2 cores turbo runs several suites at once, and the property tests share the CPU.
      testTimeout: options.testTimeout ?? 60_000,
      hookTimeout: 60_000,
      reporters: process.env.CI
        ? ['default', ['json', { outputFile: 'test-results/vitest.json' }]]
        : ['default'],
    },
  });
}
