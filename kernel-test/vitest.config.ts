// Imported by relative path, as in every package (vite's config bundler cannot load a .ts package).
import { defineConfig } from 'vitest/config';
import { packageTestConfig } from '../tooling/vitest/index';

// The boot runs in beforeAll: up to the guest's own timeout plus the image build.
const base = packageTestConfig({ testTimeout: 120_000 });
export default defineConfig({ ...base, test: { ...base.test, hookTimeout: 540_000 } });
