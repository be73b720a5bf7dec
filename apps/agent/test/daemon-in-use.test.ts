// `run` as a real process: a VM starting or stopping on a vfio device reaches the server as a
// delta within a few seconds, long before the next full scan, from a watch that reads only the
// vfio devices' `enable`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildScenario, KernelModel } from '@vfio-fleet/host-fixtures';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, startAgent, TestServer } from './helpers/test-server';

const GPU = '0000:17:00.0';
const VM = {
  pid: 4242,
  comm: 'qemu-system-x86',
  cmdline: ['qemu-system-x86_64', '-name', 'guest=vm-9'],
};
const agents: AgentProcess[] = [];
const servers: TestServer[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
  for (const server of servers.splice(0)) await server.close();
});

afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

describe('vfio-fleet-agent run: devices a VM takes and lets go', () => {
  it('sends a delta with inUse and the holder when a VM starts, and another when it stops', async () => {
    const tmp = await mkdtemp(path.join(tmpdir(), 'agent-daemon-inuse-'));
    dirs.push(tmp);
    const root = path.join(tmp, 'host');
    await buildScenario(root, 'vfio-bound');
    const srv = await TestServer.start({});
    servers.push(srv);
    // A full scan once an hour: any delta within the test comes from the in-use watch.
    const agent = startAgent([
      '--server',
      srv.url,
      '--simulate',
      root,
      '--interval',
      '3600',
      '--state-dir',
      path.join(tmp, 'state'),
      '--token',
      srv.state.issueToken(),
    ]);
    agents.push(agent);
    // A loaded CI machine starts an agent (node, the bundle, the first read) slowly.
    const snapshot = await srv.waitFor('snapshot', { timeoutMs: 30_000 });
    expect(snapshot.snapshot.devices.find((d) => d.address === GPU)).toMatchObject({
      inUse: false,
      readiness: { status: 'bound' },
    });

    const model = new KernelModel(root);
    let from = srv.received.length;
    const release = await model.holdDevice(GPU, VM);
    // The watch polls every 2 s; a loaded 2-core CI machine stretches the rescan after it.
    const taken = await srv.waitFor('delta', { from, timeoutMs: 30_000 });
    // The audio function changes too: its group is now in use.
    expect(taken.delta.devicesChanged.map((d) => d.address)).toContain(GPU);
    expect(taken.delta.devicesChanged.find((d) => d.address === GPU)).toMatchObject({
      inUse: true,
      holder: { pid: 4242, command: 'qemu-system-x86', vm: 'vm-9' },
      readiness: { status: 'in-use' },
    });

    from = srv.received.length;
    await release();
    const freed = await srv.waitFor('delta', { from, timeoutMs: 30_000 });
    expect(freed.delta.devicesChanged.find((d) => d.address === GPU)).toMatchObject({
      inUse: false,
      holder: null,
      readiness: { status: 'bound' },
    });
    expect(await agent.stop()).toBe(0);
  });
});
