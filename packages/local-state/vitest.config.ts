// Imported by relative path, not as '@vfio-fleet/vitest-config': vite's config bundler leaves
// packages found through node_modules external, and Node 20 cannot import a package's .ts entry.
import { packageTestConfig } from '../../tooling/vitest/index';

export default packageTestConfig();
