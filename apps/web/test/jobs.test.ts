// Jobs end to end with real agents (child processes of the agent bundle, `--simulate` over fixture
// trees, `--allow-rebind`) against the real server: a VF rebound to its vfio variant driver and
// back; a job for an offline host expiring at its deadline; an agent killed mid-job and restarted
// (re-delivered with the same id, never run twice); the server restarted mid-job; replayed and
// forged job results from a raw client. On PGlite always, and on PostgreSQL with DATABASE_URL.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ServerMessage } from '@vfio-fleet/core';
import {
  auditLog,
  devices,
  hosts,
  type JobRow,
  type JobState,
  jobEvents,
  jobs,
  type NewJobRow,
} from '@vfio-fleet/db';
import { buildScenario, type ScenarioName } from '@vfio-fleet/host-fixtures';
import { and, asc, eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { JobDispatcher } from '../src/jobs/dispatcher';
import { type Actor, createJob, previewJob } from '../src/jobs/job-service';
import { createLogger } from '../src/logger';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  hello,
  poll,
  RawClient,
  scanJson,
  startAgent,
  startFleet,
} from './helpers/harness';

const OPERATOR: Actor = { userId: null, username: 'test-operator', role: 'operator' };
/** mlx5-vf: two ConnectX-6 Dx VFs, each alone in its IOMMU group, ready for mlx5_vfio_pci. */
const VF = '0000:41:00.2';
const TERMINAL: readonly JobState[] = [
  'succeeded',
  'failed',
  'rolled_back',
  'cancelled',
  'expired',
];

let tmp: string;
const agents: AgentProcess[] = [];
/** Hosts already claimed by a test, so each finds its own. */
const known = new Set<string>();

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-jobs-'));
});
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface Site {
  root: string;
  stateDir: string;
}

async function site(name: string, scenario: ScenarioName = 'mlx5-vf'): Promise<Site> {
  const root = path.join(tmp, name, 'host');
  await buildScenario(root, scenario);
  return { root, stateDir: path.join(tmp, name, 'state') };
}

function agent(fleet: Fleet, where: Site, extra: string[] = []): AgentProcess {
  const started = startAgent([
    '--server',
    fleet.url,
    '--simulate',
    where.root,
    '--allow-rebind',
    '--interval',
    '1',
    '--state-dir',
    where.stateDir,
    ...extra,
  ]);
  agents.push(started);
  return started;
}

/** Enrolls a real agent on `where` and waits for its first snapshot; returns the host id. */
async function enrolledAgent(
  fleet: Fleet,
  where: Site,
  extra: string[] = [],
): Promise<{ hostId: string; process: AgentProcess }> {
  const { token } = await createEnrollmentToken(fleet.db, {
    label: 'jobs test',
    ttlSeconds: 600,
    maxUses: 1,
  });
  const process = agent(fleet, where, ['--token', token, ...extra]);
  // The new host: the first with a stored snapshot that no earlier test claimed.
  const hostId = await poll(async () => {
    const rows = await fleet.db.select().from(hosts);
    return rows.find((r) => r.lastSeq !== null && !known.has(r.id))?.id;
  }, 30_000);
  if (hostId === undefined) throw new Error(`the agent never reported: ${process.stderr()}`);
  known.add(hostId);
  return { hostId, process };
}
async function newJob(
  fleet: Fleet,
  hostId: string,
  target: 'vfio' | 'host',
  address = VF,
  persist?: boolean,
): Promise<string> {
  const preview = await previewJob(fleet.db, { hostId, address, target });
  expect(preview.ok, JSON.stringify(preview.refusal)).toBe(true);
  const view = await createJob(
    fleet.db,
    OPERATOR,
    {
      hostId,
      address,
      target,
      force: preview.needsForce.length > 0,
      persist,
      acknowledge: true,
      previewHash: preview.previewHash,
    },
    (id) => fleet.server.dispatcher.wake(id),
  );
  return view.id;
}

async function jobRow(fleet: Fleet, jobId: string): Promise<JobRow> {
  const [row] = await fleet.db.select().from(jobs).where(eq(jobs.id, jobId));
  if (row === undefined) throw new Error(`job ${jobId} is gone`);
  return row;
}

async function waitForState(
  fleet: Fleet,
  jobId: string,
  states: readonly JobState[],
  timeoutMs = 60_000,
): Promise<JobRow> {
  const row = await poll(async () => {
    const current = await jobRow(fleet, jobId);
    return states.includes(current.state) ? current : undefined;
  }, timeoutMs);
  if (row === undefined) {
    const current = await jobRow(fleet, jobId);
    throw new Error(`job ${jobId} is ${current.state}, not ${states.join('|')}`);
  }
  return row;
}

async function eventsOf(fleet: Fleet, jobId: string) {
  return fleet.db
    .select()
    .from(jobEvents)
    .where(eq(jobEvents.jobId, jobId))
    .orderBy(asc(jobEvents.id));
}

/** The state changes of a job, in order: queued, dispatched, running, succeeded... */
async function transitions(fleet: Fleet, jobId: string): Promise<string[]> {
  return (await eventsOf(fleet, jobId))
    .filter((e) => e.fromState !== e.toState)
    .map((e) => e.toState);
}

/** The job-step events recorded for a phase, as `index:status`. */
async function steps(fleet: Fleet, jobId: string, phase: 'forward' | 'rollback') {
  return (await eventsOf(fleet, jobId))
    .filter((e) => e.fromState === e.toState && e.message?.includes(`${phase} step`))
    .map((e) => {
      const data = e.data as { index: number; status: string };
      return `${data.index}:${data.status}`;
    });
}

/** The stored device's keptBy (who binds it again at boot), as the agent reported it. */
async function keptByOf(fleet: Fleet, hostId: string, address: string): Promise<unknown[]> {
  const [row] = await fleet.db
    .select({ facts: devices.facts })
    .from(devices)
    .where(and(eq(devices.hostId, hostId), eq(devices.address, address)));
  const facts = row?.facts as { keptBy?: unknown[] } | undefined;
  return facts?.keptBy ?? [];
}

async function driverOf(fleet: Fleet, hostId: string, address: string) {
  const [row] = await fleet.db
    .select({ driver: devices.driver })
    .from(devices)
    .where(and(eq(devices.hostId, hostId), eq(devices.address, address)));
  return row?.driver ?? null;
}

/**
 * Lines of the agent's JSON log that say it handed this job to its executor (a re-delivery while
 * the job runs, or of a result not yet sent, is answered without it).
 */
function runsOf(process: AgentProcess, jobId: string): number {
  return process
    .stderr()
    .split('\n')
    .filter((line) => line.includes(jobId) && line.includes('"msg":"job accepted"')).length;
}

describe.each(drivers)('jobs with real agents (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, {
      heartbeatSeconds: 1,
      offlineAfterSeconds: 3,
      jobs: { pollMs: 500, leaseSeconds: 10 },
    });
  });
  afterAll(async () => {
    await fleet.close();
  });

  let firstJobId = '';
  let firstHostId = '';

  it('rebinds an mlx5 VF to mlx5_vfio_pci end to end, then gives it back to the host', async () => {
    const where = await site(`vf-${driver}`);
    const { hostId, process } = await enrolledAgent(fleet, where);
    expect(await driverOf(fleet, hostId, VF)).toBe('mlx5_core');

    const jobId = await newJob(fleet, hostId, 'vfio');
    const done = await waitForState(fleet, jobId, TERMINAL);
    expect(done.state, `${JSON.stringify(done.result)}\n${process.stderr()}`).toBe('succeeded');
    expect(done.attempt).toBe(1);
    expect(done.acceptedAt).not.toBeNull();
    expect(done.finishedAt).not.toBeNull();
    expect(done.reasonCode).toBeNull();
    expect(done.result).toMatchObject({ type: 'job-result', jobId, status: 'succeeded' });
    expect(await transitions(fleet, jobId)).toEqual([
      'queued',
      'dispatched',
      'running',
      'succeeded',
    ]);
    const forward = await steps(fleet, jobId, 'forward');
    expect(forward.length).toBeGreaterThan(2);
    expect(forward.every((s) => s.endsWith(':ok'))).toBe(true);
    expect(new Set(forward).size).toBe(forward.length);
    expect(await steps(fleet, jobId, 'rollback')).toEqual([]);
    expect(runsOf(process, jobId)).toBe(1);

    // The agent rescans after the job and sends a delta: the stored device follows.
    const bound = await poll(
      async () => ((await driverOf(fleet, hostId, VF)) === 'mlx5_vfio_pci' ? true : undefined),
      30_000,
    );
    expect(bound).toBe(true);
    const audit = await fleet.db.select().from(auditLog).where(eq(auditLog.hostId, hostId));
    expect(audit.map((a) => a.action)).toEqual(
      expect.arrayContaining(['job-created', 'job-finished']),
    );
    expect(await keptByOf(fleet, hostId, VF)).toEqual([]);

    // Already on vfio: a job only to keep it across reboots; without that, nothing to do.
    await expect(newJob(fleet, hostId, 'vfio')).rejects.toThrow(/nothing-to-do/);
    const keep = await newJob(fleet, hostId, 'vfio', VF, true);
    const kept = await waitForState(fleet, keep, TERMINAL);
    expect(kept.state, JSON.stringify(kept.result)).toBe('succeeded');
    expect(kept.persist).toBe(true);
    expect(await steps(fleet, keep, 'forward')).toEqual([]);
    expect(kept.result).toMatchObject({
      persistence: { kept: [{ address: VF, driver: 'mlx5_vfio_pci' }], forgotten: [], error: null },
    });
    expect(
      await poll(async () => {
        const keepers = await keptByOf(fleet, hostId, VF);
        return keepers.length > 0 ? keepers : undefined;
      }, 30_000),
    ).toEqual([{ keeper: 'vfio-fleet', driver: 'mlx5_vfio_pci', source: 'bindings.json' }]);
    // A restore always forgets: asking it to keep is refused before anything is queued.
    await expect(newJob(fleet, hostId, 'host', VF, true)).rejects.toThrow(
      /persist is for moves to vfio/,
    );

    const back = await newJob(fleet, hostId, 'host');
    const restored = await waitForState(fleet, back, TERMINAL);
    expect(restored.state, JSON.stringify(restored.result)).toBe('succeeded');
    expect(restored.result).toMatchObject({
      persistence: { kept: [], forgotten: [{ address: VF, driver: 'mlx5_vfio_pci' }] },
    });
    const onHost = await poll(
      async () => ((await driverOf(fleet, hostId, VF)) === 'mlx5_core' ? true : undefined),
      30_000,
    );
    expect(onHost).toBe(true);
    firstJobId = jobId;
    firstHostId = hostId;
  }, 120_000);

  it("waits for an offline host's agent, then expires with host-offline at the deadline", async () => {
    const where = await site(`offline-${driver}`);
    const { hostId, process } = await enrolledAgent(fleet, where);
    await process.kill();
    const offline = await poll(async () => {
      const [row] = await fleet.db.select().from(hosts).where(eq(hosts.id, hostId));
      return row?.state === 'offline' ? true : undefined;
    }, 15_000);
    expect(offline).toBe(true);

    const jobId = await newJob(fleet, hostId, 'vfio');
    // The API's shortest deadline is 30 s; this test shortens the stored one to keep it quick.
    await fleet.db
      .update(jobs)
      .set({ deadline: new Date(Date.now() + 3_000) })
      .where(eq(jobs.id, jobId));
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await jobRow(fleet, jobId)).state).toBe('queued');

    const expired = await waitForState(fleet, jobId, TERMINAL, 30_000);
    expect(expired.state).toBe('expired');
    expect(expired.reasonCode).toBe('host-offline');
    expect(expired.reasonMessage).toContain('offline');
    expect(expired.attempt).toBe(0);
    expect(await transitions(fleet, jobId)).toEqual(['queued', 'expired']);
    const audit = await fleet.db.select().from(auditLog).where(eq(auditLog.hostId, hostId));
    expect(audit.find((a) => a.action === 'job-finished')?.detail).toMatchObject({
      jobId,
      state: 'expired',
      reasonCode: 'host-offline',
    });
  }, 90_000);

  it('re-delivers a job with the same id to an agent killed mid-job, which never runs it twice', async () => {
    const where = await site(`killed-${driver}`);
    const faults = path.join(tmp, `killed-${driver}`, 'faults.json');
    // The VF's probe never returns: the job is stuck after its first forward steps.
    await writeFile(faults, JSON.stringify({ faults: [{ kind: 'probe-hangs', address: VF }] }));
    const { hostId, process } = await enrolledAgent(fleet, where, ['--simulate-faults', faults]);

    const jobId = await newJob(fleet, hostId, 'vfio');
    await waitForState(fleet, jobId, ['running']);
    const before = await poll(async () => {
      const ran = await steps(fleet, jobId, 'forward');
      // Every step before the probe has been reported (the probe is the one that hangs).
      return ran.length >= 2 ? ran : undefined;
    }, 30_000);
    expect(before, process.stderr()).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const ranBefore = await steps(fleet, jobId, 'forward');
    await process.kill('SIGKILL');
    await poll(async () => {
      const [row] = await fleet.db.select().from(hosts).where(eq(hosts.id, hostId));
      return row?.state === 'offline' ? true : undefined;
    }, 15_000);
    // Nobody knows what the host went through: the job waits for its agent, still running.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect((await jobRow(fleet, jobId)).state).toBe('running');

    // The same agent (credential and job store in its state dir), without the fault.
    const restarted = agent(fleet, where);
    const done = await waitForState(fleet, jobId, TERMINAL);
    expect(done.state, restarted.stderr()).toBe('failed');
    expect(done.reasonCode).toBe('interrupted');
    expect(done.attempt).toBe(2);
    const events = await eventsOf(fleet, jobId);
    expect(events.some((e) => e.message?.startsWith('re-sent with the same id'))).toBe(true);
    expect(await transitions(fleet, jobId)).toEqual(['queued', 'dispatched', 'running', 'failed']);
    // The forward steps ran once: none after the restart, none twice.
    expect(await steps(fleet, jobId, 'forward')).toEqual(ranBefore);
    expect(runsOf(process, jobId)).toBe(1);
    // The restarted agent found the first run's claim in its job store and ran nothing.
    expect(restarted.stderr()).toContain('interrupted');
  }, 120_000);

  it('finishes a job exactly once when the server restarts while it runs', async () => {
    const where = await site(`restart-${driver}`);
    const faults = path.join(tmp, `restart-${driver}`, 'faults.json');
    // The probe takes 5 s: long enough to restart the server in the middle of the job.
    await writeFile(
      faults,
      JSON.stringify({ faults: [{ kind: 'probe-hangs', address: VF }], probeHangMs: 5_000 }),
    );
    const { hostId, process } = await enrolledAgent(fleet, where, ['--simulate-faults', faults]);
    const jobId = await newJob(fleet, hostId, 'vfio');
    await waitForState(fleet, jobId, ['running']);

    const oldDispatcher = fleet.server.dispatcher;
    await fleet.restart();
    expect(fleet.server.dispatcher).not.toBe(oldDispatcher);

    const done = await waitForState(fleet, jobId, TERMINAL);
    expect(done.state, `${JSON.stringify(done.result)}\n${process.stderr()}`).toBe('succeeded');
    const changes = await transitions(fleet, jobId);
    expect(changes).toEqual(['queued', 'dispatched', 'running', 'succeeded']);
    expect(runsOf(process, jobId)).toBe(1);
    const forward = await steps(fleet, jobId, 'forward');
    expect(new Set(forward).size).toBe(forward.length);
    const bound = await poll(
      async () => ((await driverOf(fleet, hostId, VF)) === 'mlx5_vfio_pci' ? true : undefined),
      30_000,
    );
    expect(bound).toBe(true);
  }, 120_000);

  it('ignores a replayed job result and a result for another host, with a non-fatal error', async () => {
    expect(firstJobId, 'the first test ran').not.toBe('');
    const where = await site(`raw-${driver}`);
    const { token } = await createEnrollmentToken(fleet.db, {
      label: 'raw',
      ttlSeconds: 600,
      maxUses: 1,
    });
    const client = await RawClient.connect(fleet.wsUrl);
    try {
      // It runs jobs, as an agent started with --allow-rebind says it does.
      client.send(hello({ kind: 'enroll', token }, { allowRebind: true }));
      const welcome = await client.next('welcome');
      const [host] = await fleet.db.select().from(hosts).where(eq(hosts.agentId, welcome.agentId));
      if (host === undefined) throw new Error('no host row for the raw client');
      known.add(host.id);
      client.send({ type: 'snapshot', epoch: 'raw-epoch', seq: 1, snapshot: scanJson(where.root) });
      await client.next('ack');

      // A job for the raw client's own host, finished the way an agent would.
      const jobId = await newJob(fleet, host.id, 'vfio');
      const job = await client.next('job', 0, 30_000);
      expect(job).toMatchObject({ jobId, address: VF, target: 'vfio' });
      const at = new Date().toISOString();
      const result = {
        type: 'job-result',
        jobId,
        status: 'succeeded',
        reason: null,
        failedStep: null,
        kernelError: null,
        before: [{ address: VF, driver: 'mlx5_core', driverOverride: null }],
        after: [{ address: VF, driver: 'mlx5_vfio_pci', driverOverride: 'mlx5_vfio_pci' }],
        startedAt: at,
        finishedAt: at,
      };
      client.send({ type: 'job-accepted', jobId });
      client.send(result);
      const finished = await waitForState(fleet, jobId, TERMINAL, 15_000);
      expect(finished.state).toBe('succeeded');
      const eventsBefore = await eventsOf(fleet, jobId);

      // The same result again (a replay), with another outcome: nothing changes.
      const errorsBefore = client.received.length;
      client.send({
        ...result,
        status: 'failed',
        reason: { code: 'step-failed', message: 'replayed', reasons: [] },
      });
      const replayed = await client.next('error', errorsBefore);
      expect(replayed).toMatchObject({ code: 'protocol-violation', fatal: false });
      expect(replayed.message).toContain(jobId);
      expect(await jobRow(fleet, jobId)).toEqual(finished);
      expect(await eventsOf(fleet, jobId)).toEqual(eventsBefore);

      // Another host's job (finished) and its events: untouched, whatever this host claims.
      const otherBefore = await jobRow(fleet, firstJobId);
      const otherEvents = await eventsOf(fleet, firstJobId);
      for (const forged of [
        {
          ...result,
          jobId: firstJobId,
          status: 'failed',
          reason: { code: 'x', message: 'forged', reasons: [] },
        },
        { type: 'job-accepted', jobId: firstJobId },
        { ...result, jobId: '00000000-0000-4000-8000-000000000000' },
      ]) {
        const from = client.received.length;
        client.send(forged);
        const error = await client.next('error', from);
        expect(error).toMatchObject({ code: 'protocol-violation', fatal: false });
        expect(error.message).toContain(forged.jobId);
      }
      expect(await jobRow(fleet, firstJobId)).toEqual(otherBefore);
      expect(await eventsOf(fleet, firstJobId)).toEqual(otherEvents);
      expect(otherBefore.hostId).toBe(firstHostId);

      // The connection is still up.
      const from = client.received.length;
      client.send({ type: 'ping', nonce: 'still-there', sentAt: new Date().toISOString() });
      expect(await client.next('pong', from)).toEqual({ type: 'pong', nonce: 'still-there' });
      expect(client.closeCode).toBeNull();
    } finally {
      client.close();
    }
  }, 90_000);
});

// The dispatcher's database side, driven directly: the agents here are recording send functions
// (the wire is covered above), so races and clocks can be set up exactly.
describe.each(drivers)('job dispatcher on the database (%s)', (driver) => {
  let fleet: Fleet;
  const dispatchers: JobDispatcher[] = [];
  beforeAll(async () => {
    fleet = await startFleet(driver, { jobs: { pollMs: 500 } });
  });
  afterAll(async () => {
    for (const d of dispatchers) await d.stop();
    await fleet.close();
  });

  async function dispatcher(
    instanceId: string,
    options: { runningGraceSeconds?: number; leaseSeconds?: number } = {},
  ): Promise<JobDispatcher> {
    const d = new JobDispatcher({
      db: fleet.db,
      logger: createLogger('silent'),
      instanceId,
      listen: fleet.handle.listen,
      // Only explicit wake-ups and notifications: the poll must not hide a missed one.
      pollMs: 3_600_000,
      ...options,
    });
    await d.start();
    dispatchers.push(d);
    return d;
  }

  async function host(state: 'online' | 'offline' = 'online'): Promise<string> {
    const agentId = `agent-${Math.random().toString(36).slice(2)}`;
    const [row] = await fleet.db
      .insert(hosts)
      .values({ agentId, hostname: agentId, state })
      .returning({ id: hosts.id });
    if (row === undefined) throw new Error('no host row');
    known.add(row.id);
    return row.id;
  }

  async function insertJob(values: Partial<NewJobRow> & { hostId: string }): Promise<string> {
    const [row] = await fleet.db
      .insert(jobs)
      .values({
        iommuGroup: 1,
        address: '0000:3b:00.0',
        target: 'vfio',
        deadline: new Date(Date.now() + 600_000),
        ...values,
      })
      .returning({ id: jobs.id });
    if (row === undefined) throw new Error('no job row');
    return row.id;
  }

  function recorder() {
    const messages: ServerMessage[] = [];
    return {
      messages,
      send: (message: ServerMessage) => {
        messages.push(message);
      },
      jobIds: (type: ServerMessage['type'] = 'job') =>
        messages.flatMap((m) => (m.type === type && 'jobId' in m ? [m.jobId] : [])),
    };
  }

  function result(jobId: string, status: 'succeeded' | 'failed') {
    const at = new Date().toISOString();
    return {
      type: 'job-result' as const,
      jobId,
      status,
      reason: status === 'failed' ? { code: 'step-failed', message: 'x', reasons: [] } : null,
      failedStep: null,
      kernelError: null,
      before: [],
      after: [],
      persistence: null,
      startedAt: at,
      finishedAt: at,
    };
  }

  it('hands each job to exactly one of two racing dispatchers', async () => {
    const hostId = await host();
    const [a, b] = [await dispatcher('race-a'), await dispatcher('race-b')];
    const [toA, toB] = [recorder(), recorder()];
    // Connected first, so the connect-time re-delivery finds nothing to re-send.
    a.agentConnected(hostId, toA.send);
    b.agentConnected(hostId, toB.send);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const ids: string[] = [];
    for (let group = 0; group < 40; group++)
      ids.push(await insertJob({ hostId, iommuGroup: group }));
    for (let round = 0; round < 5; round++) {
      a.wake(hostId);
      b.wake(hostId);
    }
    const all = await poll(async () => {
      const rows = await fleet.db.select().from(jobs).where(eq(jobs.hostId, hostId));
      return rows.every((r) => r.state === 'dispatched') ? rows : undefined;
    }, 30_000);
    expect(all).toHaveLength(40);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const sent = [...toA.jobIds(), ...toB.jobIds()];
    expect(sent.sort()).toEqual([...ids].sort());
    for (const row of all ?? []) {
      expect(row.attempt).toBe(1);
      expect(row.leaseOwner).toBe(toA.jobIds().includes(row.id) ? 'race-a' : 'race-b');
      expect(row.leaseUntil?.getTime()).toBeGreaterThan(Date.now());
    }
    // Each renews only the leases it holds, of agents connected to it.
    expect(await a.renewLeases()).toBe(toA.jobIds().length);
    expect(await b.renewLeases()).toBe(toB.jobIds().length);
  }, 60_000);

  it("holds a canary's dependents until it succeeded, on any host", async () => {
    const [canaryHost, otherHost] = [await host(), await host()];
    const d = await dispatcher('canary');
    const [onCanary, onOther] = [recorder(), recorder()];
    d.agentConnected(canaryHost, onCanary.send);
    d.agentConnected(otherHost, onOther.send);
    const canary = await insertJob({ hostId: canaryHost });
    const dependent = await insertJob({ hostId: otherHost, canaryOf: canary });
    d.wake(canaryHost);
    d.wake(otherHost);
    expect(await poll(() => (onCanary.jobIds().includes(canary) ? true : undefined), 10_000)).toBe(
      true,
    );
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(onOther.jobIds()).toEqual([]);
    expect((await jobRow(fleet, dependent)).state).toBe('queued');

    expect(await d.handleAgentMessage(canaryHost, { type: 'job-accepted', jobId: canary })).toEqual(
      { ok: true },
    );
    expect(await d.handleAgentMessage(canaryHost, result(canary, 'succeeded'))).toEqual({
      ok: true,
    });
    expect((await jobRow(fleet, canary)).state).toBe('succeeded');
    expect(
      await poll(() => (onOther.jobIds().includes(dependent) ? true : undefined), 10_000),
    ).toBe(true);
    expect((await jobRow(fleet, dependent)).state).toBe('dispatched');
  }, 60_000);

  it('expires by reason, and keeps a late result as an event without reviving the job', async () => {
    const online = await host('online');
    const offline = await host('offline');
    const past = new Date(Date.now() - 1_000);
    const d = await dispatcher('sweeper', { runningGraceSeconds: 0 });
    const notAccepted = await insertJob({
      hostId: online,
      state: 'dispatched',
      deadline: past,
      leaseOwner: 'sweeper',
      leaseUntil: new Date(Date.now() + 60_000),
    });
    const neverSent = await insertJob({ hostId: offline, deadline: past });
    const silent = await insertJob({
      hostId: offline,
      iommuGroup: 2,
      state: 'running',
      deadline: past,
      leaseOwner: 'a-process-that-died',
      leaseUntil: past,
    });
    // Running, overdue, but its lease is alive: a process still holds its agent.
    const held = await insertJob({
      hostId: online,
      iommuGroup: 2,
      state: 'running',
      deadline: past,
      leaseOwner: 'another-live-process',
      leaseUntil: new Date(Date.now() + 60_000),
    });
    await d.expire();
    // Sent, not yet accepted, and its lease alive: the agent may be running it with its
    // job-accepted in flight, so the deadline alone does not expire it.
    expect((await jobRow(fleet, notAccepted)).state).toBe('dispatched');
    expect(await jobRow(fleet, neverSent)).toMatchObject({
      state: 'expired',
      reasonCode: 'host-offline',
      reasonMessage: "the host was offline until the job's deadline",
    });
    const expired = await jobRow(fleet, silent);
    expect(expired).toMatchObject({ state: 'expired', reasonCode: 'no-result' });
    expect(expired.reasonMessage).toContain('re-scan the host');
    expect((await jobRow(fleet, held)).state).toBe('running');

    // The agent comes back with its result: recorded, the job stays expired.
    expect(await d.handleAgentMessage(offline, result(silent, 'succeeded'))).toEqual({ ok: true });
    expect(await jobRow(fleet, silent)).toEqual(expired);
    const last = (await eventsOf(fleet, silent)).at(-1);
    expect(last).toMatchObject({ fromState: 'expired', toState: 'expired' });
    expect(last?.message).toContain('late result');
    // Once no process holds its agent any more, past the grace, it expires as never answered...
    await fleet.db.update(jobs).set({ leaseUntil: past }).where(eq(jobs.id, notAccepted));
    await d.expire();
    expect(await jobRow(fleet, notAccepted)).toMatchObject({
      state: 'expired',
      reasonCode: 'no-answer',
    });
    // ...and a result that still comes is kept as an event too.
    expect(await d.handleAgentMessage(online, result(notAccepted, 'failed'))).toEqual({ ok: true });
    expect((await jobRow(fleet, notAccepted)).state).toBe('expired');
  }, 60_000);

  it("moves an agent's jobs to the process holding its newest connection", async () => {
    const hostId = await host();
    const stale = await dispatcher('stale');
    const live = await dispatcher('live');
    const setConnectedAt = (at: Date) =>
      fleet.db.update(hosts).set({ connectedAt: at }).where(eq(hosts.id, hostId));
    // The gateway records each hello's time on the host row, then hands the agent over.
    await setConnectedAt(new Date(Date.now() - 5_000));
    const oldLink = recorder();
    stale.agentConnected(hostId, oldLink.send);
    const first = await insertJob({ hostId });
    stale.wake(hostId);
    await poll(() => (oldLink.jobIds().includes(first) ? true : undefined), 10_000);

    // The agent reconnects to the other process; this one never saw the old socket close.
    await setConnectedAt(new Date());
    const newLink = recorder();
    live.agentConnected(hostId, newLink.send);
    expect(await poll(() => (newLink.jobIds().includes(first) ? true : undefined), 10_000)).toBe(
      true,
    );
    await stale.runTick();
    expect(stale.connectedHosts).toEqual([]);
    const second = await insertJob({ hostId, iommuGroup: 2 });
    stale.wake(hostId);
    expect(await poll(() => (newLink.jobIds().includes(second) ? true : undefined), 10_000)).toBe(
      true,
    );
    expect(oldLink.jobIds()).toEqual([first]);
    expect((await jobRow(fleet, second)).leaseOwner).toBe('live');

    // A job sent by a process that then lost the agent: its lease lapses and the process holding
    // the agent now takes it over and re-sends it.
    const lost = await insertJob({
      hostId,
      iommuGroup: 3,
      state: 'dispatched',
      leaseOwner: 'a-process-that-died',
      leaseUntil: new Date(Date.now() - 1_000),
      attempt: 1,
    });
    await live.runTick();
    expect(newLink.jobIds()).toContain(lost);
    expect(await jobRow(fleet, lost)).toMatchObject({ leaseOwner: 'live', attempt: 2 });
  }, 60_000);

  it('sends job-cancel through the process that holds the agent (NOTIFY)', async () => {
    const hostId = await host();
    const [holder, other] = [await dispatcher('holder'), await dispatcher('no-agents')];
    const agentLink = recorder();
    holder.agentConnected(hostId, agentLink.send);
    const jobId = await insertJob({ hostId });
    holder.wake(hostId);
    await poll(() => (agentLink.jobIds().includes(jobId) ? true : undefined), 10_000);
    other.requestCancel(await jobRow(fleet, jobId));
    expect(
      await poll(() => (agentLink.jobIds('job-cancel').includes(jobId) ? true : undefined), 10_000),
    ).toBe(true);

    // A disconnected agent's jobs are not delivered: they wait for it.
    holder.agentDisconnected(hostId, agentLink.send);
    const later = await insertJob({ hostId, iommuGroup: 7 });
    holder.wake(hostId);
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect((await jobRow(fleet, later)).state).toBe('queued');
    // Reconnected: the dispatched job is re-sent with the same id, the queued one delivered.
    const again = recorder();
    holder.agentConnected(hostId, again.send);
    const both = await poll(
      () => (again.jobIds().length >= 2 ? again.jobIds() : undefined),
      10_000,
    );
    expect(both?.sort()).toEqual([jobId, later].sort());
    expect((await jobRow(fleet, jobId)).attempt).toBe(2);
  }, 60_000);
});
