// One `run` per state dir, and a child agent that dies with its parent: real agent processes
// against the test server. Two agents on one state dir used to enroll as the same host and
// replace each other's connection on every dial; an orphaned local agent (its server killed with
// SIGKILL) kept running next to the next server's own.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { processAlive } from '@vfio-fleet/local-state';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type AgentProcess, poll, startAgent, TestServer } from './helpers/test-server';

const bin = path.resolve(import.meta.dirname, '../bin/vfio-fleet-agent.mjs');
let tmp: string;
let root: string;
const agents: AgentProcess[] = [];
const servers: TestServer[] = [];
const pids: number[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-state-lock-'));
  root = path.join(tmp, 'host');
  await buildScenario(root, 'dual-gpu');
});
afterEach(async () => {
  for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
  for (const pid of pids.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
  for (const server of servers.splice(0)) await server.close();
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function server(): Promise<TestServer> {
  const s = await TestServer.start();
  servers.push(s);
  return s;
}

function run(s: TestServer, stateDir: string, extra: string[] = []): AgentProcess {
  const agent = startAgent([
    '--server',
    s.url,
    '--root',
    root,
    '--state-dir',
    stateDir,
    '--interval',
    '1',
    ...extra,
  ]);
  agents.push(agent);
  return agent;
}

describe('the state dir lock', () => {
  it('refuses a second run on one state dir, naming the first; a SIGKILLed one does not block', async () => {
    const s = await server();
    const stateDir = path.join(tmp, 'one-dir');
    const first = run(s, stateDir, ['--token', s.state.issueToken()]);
    await s.waitFor('snapshot');
    const firstPid = first.child.pid ?? 0;
    const lock = JSON.parse(await readFile(path.join(stateDir, 'agent.lock'), 'utf8'));
    expect(lock.pid).toBe(firstPid);

    const second = run(s, stateDir);
    expect(await second.exited, second.stderr()).toBe(1);
    expect(second.stderr()).toContain(
      `vfio-fleet-agent: run: the agent state directory in ${stateDir} is in use by pid ${firstPid}`,
    );
    expect(second.stderr()).toContain('give this one its own --state-dir');
    expect(s.received.filter((m) => m.message.type === 'hello')).toHaveLength(1);
    expect(first.child.exitCode).toBeNull();

    first.child.kill('SIGKILL');
    await first.exited;
    const hellos = s.received.length;
    const third = run(s, stateDir);
    await s.waitFor('hello', { from: hellos });
    expect(third.child.exitCode).toBeNull();
    expect(await third.stop()).toBe(0);
  });
});

describe('--parent-fd', () => {
  it('stops the agent when the process that started it is killed with SIGKILL', async () => {
    const s = await server();
    const stateDir = path.join(tmp, 'orphan');
    // A parent that starts the agent the way the server does (fd 3 a pipe only it holds).
    const script = `
      const { spawn } = require('node:child_process');
      const agent = spawn(process.execPath, ${JSON.stringify([bin, 'run', '--server', s.url, '--root', root, '--state-dir', stateDir, '--interval', '1', '--parent-fd', '3'])}, {
        stdio: ['ignore', 'ignore', 'inherit', 'pipe'],
        env: { ...process.env, VFIO_FLEET_TOKEN: ${JSON.stringify(s.state.issueToken())} },
      });
      process.stdout.write(agent.pid + '\\n');
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    pids.push(parent.pid ?? 0);
    let stdout = '';
    let stderr = '';
    parent.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    parent.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const agentPid = Number(await poll(() => /^(\d+)\n/.exec(stdout)?.[1], 10_000));
    pids.push(agentPid);
    await s.waitFor('snapshot');
    const lock = JSON.parse(await readFile(path.join(stateDir, 'agent.lock'), 'utf8'));
    expect(lock.info.parentPid).toBe(parent.pid);

    parent.kill('SIGKILL');
    const gone = await poll(() => (processAlive(agentPid) ? undefined : true), 5_000);
    expect(gone, stderr).toBe(true);
    expect(stderr).toContain('the process that started this agent is gone');
    // It stopped cleanly: the lock is released, the socket closed with 1000.
    await expect(readFile(path.join(stateDir, 'agent.lock'), 'utf8')).rejects.toThrow('ENOENT');
  });

  it('is checked like every other flag', async () => {
    const s = await server();
    const agent = run(s, path.join(tmp, 'bad-fd'), ['--parent-fd', '1']);
    expect(await agent.exited).toBe(2);
    expect(agent.stderr()).toContain('--parent-fd must be an inherited file descriptor');
  });
});
