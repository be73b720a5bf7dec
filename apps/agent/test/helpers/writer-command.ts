// The agent's sysfs writer child as tests start it: the bundle that vitest's global setup built
// (under vitest, process.argv[1] is vitest, not the agent).
import path from 'node:path';
import type { WriterCommand } from '../../src/kernel/writer-pool';
import { agentDir } from './run-agent';

export const bundleWriter: WriterCommand = {
  command: process.execPath,
  args: [path.join(agentDir, 'dist/vfio-fleet-agent.mjs')],
};
