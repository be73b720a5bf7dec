// Rebind jobs through `run` as a real process against the kernel model (--simulate): success with
// streamed steps, rollback on injected faults, idempotent job ids, refusals, and an agent restart
// that changes no binding.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JobMessage } from '@vfio-fleet/core';
import { buildScenario, scenario } from '@vfio-fleet/host-fixtures';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { persistBindings } from '../src/rebind/bindings-file';
import { type AgentProcess, poll, startAgent, TestServer } from './helpers/test-server';

let tmp: string;
const agents: AgentProcess[] = [];
const servers: TestServer[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-daemon-jobs-'));
});

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
  for (const server of servers.splice(0)) await server.close();
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** dual-gpu: GPU 0000:17:00.0 shares IOMMU group 21 with its audio function 0000:17:00.1. */
const GPU = '0000:17:00.0';
const GPU_AUDIO = '0000:17:00.1';
/** The root disk's NVMe controller: host-critical. */
const ROOT_NVME = '0000:4b:00.0';
const ALL = [GPU, GPU_AUDIO, '0000:31:00.0', '0000:31:00.1', ROOT_NVME, '0000:65:00.0'];

/**
 * dual-gpu with nvidia's id-table line added to modules.alias (DKMS adds it on a real host): without
 * it the kernel model, like the kernel, cannot bind the GPU back to nvidia in a rollback.
 */
async function dualGpu(root: string): Promise<void> {
  const base = scenario('dual-gpu').modulesAlias ?? '';
  await buildScenario(root, 'dual-gpu', {
    modulesAlias: `${base}alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia\n`,
  });
}

interface Setup {
  root: string;
  stateDir: string;
  server: TestServer;
  agent: AgentProcess;
}

async function setup(name: string, flags: string[] = ['--allow-rebind']): Promise<Setup> {
  const root = path.join(tmp, name, 'host');
  await dualGpu(root);
  const stateDir = path.join(tmp, name, 'state');
  const server = await TestServer.start();
  servers.push(server);
  const agent = launch(server, root, stateDir, ['--token', server.state.issueToken(), ...flags]);
  await server.waitFor('snapshot');
  return { root, stateDir, server, agent };
}

function launch(server: TestServer, root: string, stateDir: string, extra: string[]): AgentProcess {
  const agent = startAgent([
    '--server',
    server.url,
    '--root',
    root,
    '--simulate',
    '--interval',
    '1',
    '--state-dir',
    stateDir,
    ...extra,
  ]);
  agents.push(agent);
  return agent;
}

function job(jobId: string, address: string, extra: Partial<JobMessage> = {}): JobMessage {
  return {
    type: 'job',
    jobId,
    address,
    target: 'vfio',
    force: false,
    persist: false,
    deadline: new Date(Date.now() + 60_000).toISOString(),
    ...extra,
  };
}

/** The driver each device is bound to in the tree, as the `driver` link says. */
async function bindings(root: string, addresses = ALL): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const address of addresses) {
    const link = await readlink(path.join(root, 'sys/bus/pci/devices', address, 'driver')).catch(
      () => null,
    );
    out[address] = link === null ? null : path.basename(link);
  }
  return out;
}

function result(server: TestServer, jobId: string, from = 0) {
  return server.waitFor('job-result', { from, match: (m) => m.jobId === jobId, timeoutMs: 20_000 });
}

describe('vfio-fleet-agent run: jobs', () => {
  it('runs a job step by step, reports success, never runs a re-sent id twice, and a restart changes no binding', async () => {
    const { root, stateDir, server, agent } = await setup('success');
    const before = await bindings(root);
    expect(before[GPU]).toBe('nvidia');
    expect(server.messages('hello')[0]?.allowRebind).toBe(true);

    server.send(job('job-ok-1', GPU));
    await server.waitFor('job-accepted', { match: (m) => m.jobId === 'job-ok-1' });
    const done = await result(server, 'job-ok-1');
    expect(done.status, JSON.stringify(done.reason)).toBe('succeeded');
    const steps = server.messages('job-step').filter((s) => s.jobId === 'job-ok-1');
    expect(steps.length).toBeGreaterThan(0);
    expect(steps.every((s) => s.status !== 'failed')).toBe(true);
    expect(await bindings(root, [GPU, GPU_AUDIO])).toEqual({
      [GPU]: 'vfio-pci',
      [GPU_AUDIO]: 'vfio-pci',
    });
    // The inventory catches up without waiting for the server to ask.
    const delta = await server.waitFor('delta', {
      match: (m) =>
        m.delta.devicesChanged.some((d) => d.address === GPU && d.driver === 'vfio-pci'),
    });
    expect(delta.delta.devicesAdded).toEqual([]);

    // Re-delivered: the stored outcome comes back, no step runs again.
    const from = server.received.length;
    server.send(job('job-ok-1', GPU));
    const repeat = await result(server, 'job-ok-1', from);
    expect(repeat).toEqual(done);
    expect(server.messages('job-step').filter((s) => s.jobId === 'job-ok-1')).toHaveLength(
      steps.length,
    );

    // Restart: the group stays on vfio and nothing else moves.
    const bound = await bindings(root);
    expect(await agent.stop()).toBe(0);
    const restartFrom = server.received.length;
    launch(server, root, stateDir, ['--allow-rebind']);
    const snapshot = await server.waitFor('snapshot', { from: restartFrom });
    expect(snapshot.snapshot.devices.find((d) => d.address === GPU)?.driver).toBe('vfio-pci');
    expect(await bindings(root)).toEqual(bound);
  });

  it.each([
    {
      name: 'a failing sysfs write',
      faults: [
        {
          kind: 'write-fails',
          path: `/sys/bus/pci/devices/${GPU_AUDIO}/driver_override`,
          errno: 'EIO',
          times: 1,
        },
      ],
      errno: 'EIO',
    },
    {
      name: 'a module that cannot load',
      faults: [{ kind: 'modprobe-fails', module: 'vfio_pci', errno: 'ENOENT' }],
      errno: 'ENOENT',
    },
    {
      name: 'a driver that refuses to bind',
      faults: [{ kind: 'bind-refuses', driver: 'vfio-pci', errno: 'ENODEV' }],
      errno: null,
    },
  ])(
    'rolls back on $name, leaving every device of the group as it was',
    async ({ faults, errno }) => {
      const name = `rollback-${faults[0]?.kind}`;
      const root = path.join(tmp, name, 'host');
      await dualGpu(root);
      const faultsFile = path.join(tmp, name, 'faults.json');
      await writeFile(faultsFile, JSON.stringify({ faults }));
      const server = await TestServer.start();
      servers.push(server);
      launch(server, root, path.join(tmp, name, 'state'), [
        '--token',
        server.state.issueToken(),
        '--allow-rebind',
        '--simulate-faults',
        faultsFile,
      ]);
      await server.waitFor('snapshot');
      const before = await bindings(root);

      server.send(job('job-rb-1', GPU));
      const done = await result(server, 'job-rb-1');
      expect(done.status, JSON.stringify(done)).toBe('rolled_back');
      expect(done.failedStep?.phase).toBe('forward');
      if (errno !== null) expect(done.kernelError?.errno).toBe(errno);
      expect(done.after).toEqual(done.before);
      expect(await bindings(root)).toEqual(before);
      const rollbackSteps = server
        .messages('job-step')
        .filter((s) => s.jobId === 'job-rb-1' && s.phase === 'rollback');
      expect(rollbackSteps.length).toBeGreaterThan(0);
    },
  );

  it('refuses every job when read-only (no --allow-rebind)', async () => {
    const { root, server } = await setup('read-only', []);
    const before = await bindings(root);
    server.send(job('job-ro-1', GPU));
    const done = await result(server, 'job-ro-1');
    expect(done.status).toBe('refused');
    expect(done.reason?.code).toBe('read-only');
    expect(done.reason?.message).toContain('nothing was written');
    // It told the server so at hello, so a server does not queue jobs for it in the first place.
    expect(server.messages('hello').map((h) => h.allowRebind)).toEqual([false]);
    expect(server.messages('job-step')).toHaveLength(0);
    expect(await bindings(root)).toEqual(before);
  });

  it('refuses a host-critical device even when forced, and a job past its deadline', async () => {
    const { root, server } = await setup('critical');
    const before = await bindings(root);

    server.send(job('job-crit-1', ROOT_NVME, { force: true }));
    const critical = await result(server, 'job-crit-1');
    expect(critical.status).toBe('refused');
    expect(critical.reason?.reasons.map((r) => r.code)).toContain('host-critical');

    server.send(job('job-late-1', GPU, { deadline: new Date(Date.now() - 1_000).toISOString() }));
    const late = await result(server, 'job-late-1');
    expect(late.status).toBe('refused');
    expect(late.reason?.code).toBe('deadline-passed');

    expect(server.messages('job-step')).toHaveLength(0);
    expect(await bindings(root)).toEqual(before);
  });

  it('runs only its own plan for the group it was asked about, whatever else a job frame says', async () => {
    const { root, server } = await setup('forged');
    const before = await bindings(root);

    // No such device on this host; a bridge (rebinding it would take every device behind it).
    server.send(job('job-none-1', '0000:ee:00.0', { force: true }));
    expect((await result(server, 'job-none-1')).reason?.code).toBe('unknown-device');
    server.send(job('job-bridge-1', '0000:16:02.0', { force: true }));
    const bridge = await result(server, 'job-bridge-1');
    expect(bridge.status).toBe('refused');
    expect(bridge.reason?.code).toBe('not-endpoint');
    expect(server.messages('job-step')).toHaveLength(0);
    expect(await bindings(root)).toEqual(before);

    // A job frame carrying steps of the server's own, aimed at the root disk: the job has no
    // plan field, so they are dropped unread and the agent plans the GPU's group itself.
    const forged = [
      {
        action: 'unbind-current',
        address: ROOT_NVME,
        path: `/sys/bus/pci/devices/${ROOT_NVME}/driver/unbind`,
      },
      {
        action: 'set-override',
        address: ROOT_NVME,
        path: `/sys/bus/pci/devices/${ROOT_NVME}/driver_override`,
        value: 'vfio-pci',
      },
    ];
    server.sendRaw(
      JSON.stringify({ ...job('job-forged-1', GPU), steps: forged, plan: { forward: forged } }),
    );
    const done = await result(server, 'job-forged-1');
    expect(done.status, JSON.stringify(done.reason)).toBe('succeeded');
    const touched = new Set(
      server
        .messages('job-step')
        .filter((m) => m.jobId === 'job-forged-1')
        .flatMap((m) => ('address' in m.step ? [m.step.address] : [])),
    );
    expect([...touched].sort()).toEqual([GPU, GPU_AUDIO]);
    expect(await bindings(root)).toEqual({ ...before, [GPU]: 'vfio-pci', [GPU_AUDIO]: 'vfio-pci' });
  });

  it('never runs a job id again when its stored outcome is damaged', async () => {
    const { root, stateDir, server } = await setup('damaged-record');
    const before = await bindings(root);
    server.send(job('job-rec-1', GPU));
    expect((await result(server, 'job-rec-1')).status).toBe('succeeded');
    server.send(job('job-rec-2', GPU, { target: 'host' }));
    expect((await result(server, 'job-rec-2')).status).toBe('succeeded');
    expect(await bindings(root)).toEqual(before);

    // Re-sent after its record was damaged: running it again would move the GPU a second time.
    const record = path.join(stateDir, 'jobs', 'job-rec-1.json');
    await writeFile(record, '{"jobId": "job-rec-1", "status": "succ');
    const from = server.received.length;
    server.send(job('job-rec-1', GPU));
    const again = await result(server, 'job-rec-1', from);
    expect(again.status).toBe('refused');
    expect(again.reason?.code).toBe('state-unavailable');
    expect(again.reason?.message).toContain(record);
    expect(server.received.slice(from).filter((r) => r.message.type === 'job-step')).toEqual([]);
    expect(await bindings(root)).toEqual(before);
  });

  it('re-applies a persisted binding at start, read-only or not, and touches no other device', async () => {
    const root = path.join(tmp, 'persisted', 'host');
    await dualGpu(root);
    const stateDir = path.join(tmp, 'persisted', 'state');
    await persistBindings(stateDir, [
      {
        address: GPU,
        vendorId: '10de',
        deviceId: '2204',
        driver: 'vfio-pci',
        force: false,
        persistedAt: new Date().toISOString(),
      },
    ]);
    const before = await bindings(root);
    const server = await TestServer.start();
    servers.push(server);
    launch(server, root, stateDir, ['--token', server.state.issueToken()]);
    // Re-applied before the first read: the very first snapshot already shows it.
    const snapshot = await server.waitFor('snapshot');
    expect(snapshot.snapshot.devices.find((d) => d.address === GPU)?.driver).toBe('vfio-pci');
    expect(await bindings(root)).toEqual({
      ...before,
      [GPU]: 'vfio-pci',
      // The GPU's IOMMU group moves as one.
      [GPU_AUDIO]: 'vfio-pci',
    });
  });

  it('keeps a binding across reboots when a job asks, says who keeps it, and a restore forgets it', async () => {
    const { root, stateDir, server, agent } = await setup('persist-job');
    const keptBy = (m: {
      delta: { devicesChanged: Array<{ address: string; keptBy: unknown[] }> };
    }) => m.delta.devicesChanged.find((d) => d.address === GPU)?.keptBy;

    server.send(job('job-p-1', GPU));
    const plain = await result(server, 'job-p-1');
    expect(plain.status).toBe('succeeded');
    expect(plain.persistence).toBeNull();
    expect(existsSync(path.join(stateDir, 'bindings.json'))).toBe(false);

    // The group is on vfio already: a job asking to keep it writes nothing to sysfs, only the record.
    let from = server.received.length;
    server.send(job('job-p-2', GPU, { persist: true }));
    const kept = await result(server, 'job-p-2', from);
    expect(kept.status).toBe('succeeded');
    expect(server.messages('job-step').filter((s) => s.jobId === 'job-p-2')).toEqual([]);
    expect(kept.persistence).toEqual({
      kept: [
        { address: GPU, driver: 'vfio-pci' },
        { address: GPU_AUDIO, driver: 'vfio-pci' },
      ],
      forgotten: [],
      error: null,
    });
    const keptDelta = await server.waitFor('delta', {
      from,
      match: (m) => keptBy(m)?.length === 1,
    });
    expect(keptBy(keptDelta)).toEqual([
      { keeper: 'vfio-fleet', driver: 'vfio-pci', source: 'bindings.json' },
    ]);

    // A reboot: the tree comes back with host drivers, and the agent binds the group again.
    expect(await agent.stop()).toBe(0);
    await rm(root, { recursive: true, force: true });
    await dualGpu(root);
    from = server.received.length;
    launch(server, root, stateDir, ['--allow-rebind']);
    // The agent re-applies the binding (a whole job) before its first read.
    const snapshot = await server.waitFor('snapshot', { from, timeoutMs: 30_000 });
    const gpu = snapshot.snapshot.devices.find((d) => d.address === GPU);
    expect(gpu?.driver).toBe('vfio-pci');
    expect(gpu?.keptBy.map((k) => k.keeper)).toEqual(['vfio-fleet']);

    from = server.received.length;
    server.send(job('job-p-3', GPU, { target: 'host' }));
    const restored = await result(server, 'job-p-3', from);
    expect(restored.status, JSON.stringify(restored.reason)).toBe('succeeded');
    expect(restored.persistence?.forgotten.map((b) => b.address)).toEqual([GPU, GPU_AUDIO]);
    const bindingsFile = JSON.parse(await readFile(path.join(stateDir, 'bindings.json'), 'utf8'));
    expect(bindingsFile.bindings).toEqual([]);
    // A rescan may land between the last step and the record's removal: the device then shows
    // on nvidia and still kept, and the next delta drops the keeper.
    const back = await server.waitFor('delta', {
      from,
      timeoutMs: 30_000,
      match: (m) =>
        m.delta.devicesChanged.some(
          (d) => d.address === GPU && d.driver === 'nvidia' && d.keptBy.length === 0,
        ),
    });
    expect(keptBy(back)).toEqual([]);
  });

  /** An agent on dual-gpu whose GPU probe takes `ms`, so a job is still running for a while. */
  async function slowProbe(name: string, ms: number) {
    const root = path.join(tmp, name, 'host');
    await dualGpu(root);
    const faultsFile = path.join(tmp, name, 'faults.json');
    await writeFile(
      faultsFile,
      JSON.stringify({ faults: [{ kind: 'probe-hangs', address: GPU }], probeHangMs: ms }),
    );
    const server = await TestServer.start();
    servers.push(server);
    const agent = launch(server, root, path.join(tmp, name, 'state'), [
      '--token',
      server.state.issueToken(),
      '--allow-rebind',
      '--simulate-faults',
      faultsFile,
    ]);
    await server.waitFor('snapshot');
    return { root, server, agent };
  }

  it('re-sends a result produced while the server was away once it is back', async () => {
    const { server: first, agent } = await slowProbe('redeliver', 300);
    first.send(job('job-away-1', GPU));
    await first.waitFor('job-accepted');
    const port = first.port;
    await first.close();
    servers.splice(servers.indexOf(first), 1);
    await poll(
      () => (agent.stderr().includes('job result kept for the next session') ? true : undefined),
      10_000,
    );

    const second = await TestServer.start({ port, state: first.state });
    servers.push(second);
    const done = await result(second, 'job-away-1');
    expect(done.status).toBe('succeeded');
    expect(first.messages('job-result')).toHaveLength(0);
  });

  it('on SIGTERM during a job, finishes it, sends its result, closes with 1000 and exits 0', async () => {
    const { root, server, agent } = await slowProbe('sigterm-job', 1_500);
    server.send(job('job-term-1', GPU));
    await server.waitFor('job-accepted');
    expect(await agent.stop('SIGTERM', 15_000)).toBe(0);
    expect(server.messages('job-result')).toMatchObject([
      { jobId: 'job-term-1', status: 'succeeded' },
    ]);
    expect(await bindings(root, [GPU, GPU_AUDIO])).toEqual({
      [GPU]: 'vfio-pci',
      [GPU_AUDIO]: 'vfio-pci',
    });
    await poll(() => (server.closes.length > 0 ? true : undefined), 2_000);
    expect(server.closes).toEqual([1000]);
  });
});
