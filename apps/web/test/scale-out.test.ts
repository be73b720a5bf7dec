// Two real server processes (`src/main.ts`) on one PostgreSQL database, and a real agent: a job
// created through process A's API while process B holds the agent reaches it through B (A's
// NOTIFY wakes B); after B dies, a job queued meanwhile is delivered through A once the agent comes
// back there. PostgreSQL only: PGlite cannot be shared by processes.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  createDb,
  type DbHandle,
  devices,
  hosts,
  type JobRow,
  type JobState,
  jobEvents,
  jobs,
} from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { and, asc, eq } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { type ApiClient, apiClient } from './helpers/api-client';
import { type AgentProcess, poll, startAgent } from './helpers/harness';

const maintenanceUrl = process.env.DATABASE_URL || undefined;
const webDir = path.resolve(import.meta.dirname, '..');
const ADMIN_PASSWORD = 'scale-out-admin-password';
const VF = '0000:41:00.2';
const TERMINAL: readonly JobState[] = [
  'succeeded',
  'failed',
  'rolled_back',
  'cancelled',
  'expired',
];

interface ServerProcess {
  child: ChildProcess;
  url: string;
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

async function startMain(databaseUrl: string): Promise<ServerProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: webDir,
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_HEARTBEAT_SECONDS: '1',
      ADMIN_PASSWORD,
      // Neither a local agent for this machine nor the UI: the test's agent is the only host.
      VFIO_FLEET_LOCAL_AGENT: '0',
      VFIO_FLEET_UI: '0',
      VFIO_FLEET_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await poll(() => /"url":"(http:[^"]+)"/.exec(output)?.[1], 60_000);
  if (url === undefined) {
    child.kill('SIGKILL');
    throw new Error(`the server did not start:\n${output}`);
  }
  return {
    child,
    url,
    output: () => output,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** The log lines of a server process that say it sent this job to an agent. */
function dispatchedBy(server: ServerProcess, jobId: string): number {
  return server
    .output()
    .split('\n')
    .filter((line) => line.includes(jobId) && line.includes('"msg":"job dispatched"')).length;
}

describe.skipIf(!maintenanceUrl)('two server processes on one PostgreSQL', () => {
  let tmp: string;
  let handle: DbHandle;
  let admin: postgres.Sql;
  let name: string;
  let databaseUrl: string;
  const servers: ServerProcess[] = [];
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    if (maintenanceUrl === undefined) return;
    tmp = await mkdtemp(path.join(tmpdir(), 'web-scale-out-'));
    name = `vf_test_${randomBytes(6).toString('hex')}`;
    admin = postgres(maintenanceUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`CREATE DATABASE "${name}"`);
    const url = new URL(maintenanceUrl);
    url.pathname = `/${name}`;
    databaseUrl = url.toString();
    handle = await createDb({ url: databaseUrl, env: {} });
    await handle.migrate();
  });
  afterAll(async () => {
    for (const agent of agents) await agent.kill();
    for (const server of servers) await server.kill();
    await handle?.close();
    if (admin !== undefined) {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end({ timeout: 5 });
    }
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  async function waitForState(jobId: string, states: readonly JobState[]): Promise<JobRow> {
    const row = await poll(async () => {
      const [current] = await handle.db.select().from(jobs).where(eq(jobs.id, jobId));
      return current !== undefined && states.includes(current.state) ? current : undefined;
    }, 60_000);
    if (row === undefined) throw new Error(`job ${jobId} never reached ${states.join('|')}`);
    return row;
  }

  /** Previews and creates a job through a server process's API, as the dashboard does. */
  async function newJob(
    client: ApiClient,
    hostId: string,
    target: 'vfio' | 'host',
  ): Promise<string> {
    const preview = await client.api.jobs.preview.query({ hostId, address: VF, target });
    expect(preview.ok, JSON.stringify(preview.refusal)).toBe(true);
    const view = await client.api.jobs.create.mutate({
      hostId,
      address: VF,
      target,
      force: preview.needsForce.length > 0,
      acknowledge: true,
      previewHash: preview.previewHash,
    });
    return view.id;
  }

  async function driverOf(hostId: string): Promise<string | null> {
    const [row] = await handle.db
      .select({ driver: devices.driver })
      .from(devices)
      .where(and(eq(devices.hostId, hostId), eq(devices.address, VF)));
    return row?.driver ?? null;
  }

  it('delivers through the process holding the agent, and through the other after it dies', async () => {
    const [a, b] = await Promise.all([startMain(databaseUrl), startMain(databaseUrl)]);
    if (a === undefined || b === undefined) throw new Error('unreachable');
    servers.push(a, b);
    const throughA = apiClient(a.url);
    await throughA.api.auth.login.mutate({ username: 'admin', password: ADMIN_PASSWORD });

    const root = path.join(tmp, 'host');
    const stateDir = path.join(tmp, 'state');
    await buildScenario(root, 'mlx5-vf');
    const common = [
      '--simulate',
      root,
      '--allow-rebind',
      '--interval',
      '1',
      '--state-dir',
      stateDir,
    ];
    const { token } = await createEnrollmentToken(handle.db, {
      label: 'scale-out',
      ttlSeconds: 600,
      maxUses: 1,
    });
    const onB = startAgent(['--server', b.url, '--token', token, ...common]);
    agents.push(onB);
    const hostId = await poll(async () => {
      const [row] = await handle.db.select().from(hosts);
      return row?.lastSeq !== null && row?.lastSeq !== undefined ? row.id : undefined;
    }, 60_000);
    if (hostId === undefined) throw new Error(`the agent never reported:\n${onB.stderr()}`);

    // Created through A, which does not hold the agent: its NOTIFY makes B deliver it.
    const first = await newJob(throughA, hostId, 'vfio');
    const done = await waitForState(first, TERMINAL);
    expect(done.state, `${JSON.stringify(done.result)}\n${b.output()}`).toBe('succeeded');
    expect(dispatchedBy(b, first)).toBe(1);
    expect(dispatchedBy(a, first)).toBe(0);
    const events = await handle.db
      .select()
      .from(jobEvents)
      .where(eq(jobEvents.jobId, first))
      .orderBy(asc(jobEvents.id));
    expect(events.filter((e) => e.fromState !== e.toState).map((e) => e.toState)).toEqual([
      'queued',
      'dispatched',
      'running',
      'succeeded',
    ]);
    const bound = await poll(
      async () => ((await driverOf(hostId)) === 'mlx5_vfio_pci' ? true : undefined),
      30_000,
    );
    expect(bound).toBe(true);

    // B dies with the agent's socket; the agent (whose one server URL is B's) is stopped too.
    await b.kill('SIGKILL');
    await onB.kill();
    // A job queued while no process holds the agent waits...
    const second = await newJob(throughA, hostId, 'host');
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const [waiting] = await handle.db.select().from(jobs).where(eq(jobs.id, second));
    expect(waiting?.state).toBe('queued');

    // ...and the agent brought back against A (same state dir: same credential) gets it there.
    const onA = startAgent(['--server', a.url, ...common]);
    agents.push(onA);
    const restored = await waitForState(second, TERMINAL);
    expect(restored.state, `${JSON.stringify(restored.result)}\n${a.output()}`).toBe('succeeded');
    expect(dispatchedBy(a, second)).toBe(1);
    expect(restored.leaseOwner).not.toBe(done.leaseOwner);
    const back = await poll(
      async () => ((await driverOf(hostId)) === 'mlx5_core' ? true : undefined),
      30_000,
    );
    expect(back).toBe(true);
  }, 180_000);
});
