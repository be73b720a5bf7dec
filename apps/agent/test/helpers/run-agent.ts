// Runs the agent as a real child process, the way an operator or a script does.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

export const agentDir = path.resolve(import.meta.dirname, '../..');
export const repoRoot = path.resolve(agentDir, '../..');
const bin = path.join(agentDir, 'bin/vfio-fleet-agent.mjs');

export interface AgentRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runAgent(args: readonly string[], env: Record<string, string> = {}): AgentRun {
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: repoRoot,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', ...env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}
