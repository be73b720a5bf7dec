// `run` as a real process with a sysfs write stuck in the kernel: the GPU's unbind from nvidia goes
// through the real writer child into a FIFO (--simulate-faults `sysfsWrites`), which blocks like
// an unbind behind a VM's open; the rest of the host is the kernel model. Over its WebSocket the
// daemon must keep answering, tell the server the job failed stuck-in-kernel and the device is
// stuck, run another group's job meanwhile, and report the device again once the write returns.
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot, JobMessage } from '@vfio-fleet/core';
import { buildScenario, scenario } from '@vfio-fleet/host-fixtures';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type AgentProcess, poll, startAgent, TestServer } from './helpers/test-server';

/** dual-gpu: GPU 0000:17:00.0 shares IOMMU group 21 with its audio; another GPU in its own. */
const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const OTHER_GPU = '0000:31:00.0';
const STUCK_PATH = '/sys/bus/pci/drivers/nvidia/unbind';
/** Generous: a loaded 2-core CI machine, and two step timeouts before a write counts as stuck. */
const WAIT_MS = 60_000;

const agents: AgentProcess[] = [];
const servers: TestServer[] = [];
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
  for (const server of servers.splice(0)) await server.close();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let tmp: string | null = null;
afterAll(async () => {
  if (tmp !== null) await rm(tmp, { recursive: true, force: true });
});

function job(jobId: string, address: string): JobMessage {
  return {
    type: 'job',
    jobId,
    address,
    target: 'vfio',
    force: false,
    persist: false,
    deadline: new Date(Date.now() + 5 * WAIT_MS).toISOString(),
  };
}

/** The newest host state the server holds for its one agent. */
function serverView(server: TestServer): HostSnapshot | null {
  const [agentId] = server.state.streams.keys();
  return agentId === undefined ? null : server.state.latest(agentId);
}

async function until(
  server: TestServer,
  what: string,
  check: (view: HostSnapshot) => boolean,
): Promise<HostSnapshot> {
  const found = await poll(() => {
    const view = serverView(server);
    return view !== null && check(view) ? view : undefined;
  }, WAIT_MS);
  if (found === undefined) {
    throw new Error(
      `the server never saw ${what}: ${JSON.stringify(serverView(server)?.problems)}`,
    );
  }
  return found;
}

describe('vfio-fleet-agent run: a write stuck in the kernel', () => {
  it('keeps its session, reports the device stuck, runs another group, and re-reads it after', async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'agent-daemon-stuck-'));
    const root = path.join(tmp, 'host');
    // nvidia's id-table line, as DKMS adds it: the kernel model can then bind the GPU back.
    const base = scenario('dual-gpu').modulesAlias ?? '';
    await buildScenario(root, 'dual-gpu', {
      modulesAlias: `${base}alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia\n`,
    });
    const fifo = path.join(root, 'sys/bus/pci/drivers/nvidia/unbind');
    await rm(fifo);
    execFileSync('mkfifo', [fifo]);
    let released = false;
    const release = async (): Promise<string> => {
      released = true;
      const handle = await open(fifo, 'r');
      try {
        return await handle.readFile('utf8');
      } finally {
        await handle.close();
      }
    };
    cleanups.push(async () => {
      if (!released) await release();
    });
    const faults = path.join(tmp, 'faults.json');
    await writeFile(
      faults,
      JSON.stringify({
        faults: [],
        sysfsWrites: [{ path: STUCK_PATH, value: GPU }],
        stepTimeoutMs: 1500,
      }),
    );
    const server = await TestServer.start();
    servers.push(server);
    const agent = startAgent([
      '--server',
      server.url,
      '--root',
      root,
      '--simulate',
      '--simulate-faults',
      faults,
      '--allow-rebind',
      '--interval',
      '1',
      '--state-dir',
      path.join(tmp, 'state'),
      '--token',
      server.state.issueToken(),
    ]);
    agents.push(agent);
    await server.waitFor('snapshot', { timeoutMs: WAIT_MS });

    server.send(job('stuck-1', GPU));
    const outcome = await server.waitFor('job-result', {
      match: (m) => m.jobId === 'stuck-1',
      timeoutMs: WAIT_MS,
    });
    expect(outcome.status, JSON.stringify(outcome.reason)).toBe('failed');
    expect(outcome.reason?.code).toBe('stuck-in-kernel');
    expect(outcome.reason?.message).toContain(`to ${STUCK_PATH}`);

    // The server's view: the GPU is reported stuck in the kernel, not read; its audio is.
    const during = await until(server, 'the GPU stuck', (view) =>
      view.problems.some(
        (p) => p.device?.address === GPU && p.message.startsWith('stuck in the kernel'),
      ),
    );
    expect(during.devices.map((d) => d.address)).not.toContain(GPU);
    expect(during.devices.map((d) => d.address)).toContain(AUDIO);

    // The session is alive: the daemon answers the server's ping.
    let from = server.received.length;
    server.send({ type: 'ping', nonce: 'while-stuck', sentAt: new Date().toISOString() });
    await server.waitFor('pong', { from, match: (m) => m.nonce === 'while-stuck' });

    // Another group's job runs to the end meanwhile, and the server sees its result.
    from = server.received.length;
    server.send(job('other-1', OTHER_GPU));
    const other = await server.waitFor('job-result', {
      from,
      match: (m) => m.jobId === 'other-1',
      timeoutMs: WAIT_MS,
    });
    expect(other.status, JSON.stringify(other.reason)).toBe('succeeded');
    await until(server, 'the other GPU on vfio-pci', (view) =>
      view.devices.some((d) => d.address === OTHER_GPU && d.driver === 'vfio-pci'),
    );
    // Still stuck: nothing re-read the GPU behind the write's back.
    expect(serverView(server)?.devices.map((d) => d.address)).not.toContain(GPU);

    // The write returns: the daemon reads the GPU again and the problem goes.
    expect(await release()).toBe(GPU);
    const after = await until(
      server,
      'the GPU again',
      (view) =>
        view.devices.some((d) => d.address === GPU) &&
        !view.problems.some((p) => p.device?.address === GPU),
    );
    // The FIFO took the write, not the model: the GPU is where the kernel model left it.
    expect(after.devices.find((d) => d.address === GPU)?.driver).toBe('nvidia');
    from = server.received.length;
    server.send({ type: 'ping', nonce: 'after', sentAt: new Date().toISOString() });
    await server.waitFor('pong', { from, match: (m) => m.nonce === 'after' });
    expect(await agent.stop()).toBe(0);
  }, 240_000);
});
