// PostgreSQL goes away for a while under a connected agent, and comes back.
//
// A TCP proxy sits between the server and PostgreSQL. With connections refused, the agent's next
// delta (a hot-plugged NIC) cannot be stored: the server answers `internal` (not fatal) and closes,
// the agent redials with its backoff and is turned away the same way while the database is down,
// and /api/health says 503. Once the proxy is restored, the agent's resumed stream brings the
// stored inventory up to the host's: the same epoch, the delta applied once (no resync), every
// device there, health 200 again. With connections accepted and dropped instead (a proxy with no
// database behind it), postgres.js holds the query until the database is back: health still
// answers 503 at once, and the held delta is stored after. PostgreSQL only: PGlite runs
// in-process and cannot lose its network.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDb, type DbHandle, devices, hosts } from '@vfio-fleet/db';
import { buildScenario, hotplug } from '@vfio-fleet/host-fixtures';
import { and, eq } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { createLogger } from '../src/logger';
import { type RunningServer, startServer } from '../src/server';
import { type AgentProcess, poll, scanJson, startAgent } from './helpers/harness';
import { scrape } from './helpers/scrape';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy';

const maintenanceUrl = process.env.DATABASE_URL || undefined;

/** A NIC that was not there before, in an IOMMU group of its own. */
const HOTPLUGGED = {
  address: '0000:b1:00.0',
  vendorId: '8086',
  deviceId: '1572',
  classCode: '020000',
  iommuGroup: 90,
  driver: null,
};

describe.skipIf(maintenanceUrl === undefined)('the database briefly unreachable', () => {
  let tmp: string;
  let proxy: TcpProxy;
  let handle: DbHandle;
  let server: RunningServer;
  const agents: AgentProcess[] = [];
  let dropDatabase: () => Promise<void> = async () => {};

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'web-db-outage-'));
    const admin = postgres(maintenanceUrl ?? '', { max: 1, onnotice: () => {} });
    const name = `vf_test_${randomBytes(6).toString('hex')}`;
    await admin.unsafe(`CREATE DATABASE "${name}"`);
    dropDatabase = async () => {
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end({ timeout: 5 });
    };
    const direct = new URL(maintenanceUrl ?? '');
    proxy = await startTcpProxy({
      host: direct.hostname || '127.0.0.1',
      port: Number(direct.port || 5432),
    });
    const viaProxy = new URL(direct);
    viaProxy.hostname = '127.0.0.1';
    viaProxy.port = String(proxy.port);
    viaProxy.pathname = `/${name}`;
    handle = await createDb({ url: viaProxy.toString(), env: {} });
    await handle.migrate();
    server = await startServer({
      port: 0,
      db: handle.db,
      logger: createLogger(process.env.VFIO_FLEET_TEST_LOG === '1' ? 'debug' : 'silent'),
      heartbeatSeconds: 30,
    });
  });
  afterAll(async () => {
    for (const agent of agents.splice(0)) await agent.kill();
    await proxy?.restore();
    await server?.close();
    await handle?.close();
    await proxy?.close();
    await dropDatabase();
    await rm(tmp, { recursive: true, force: true });
  });

  async function healthStatus(): Promise<number> {
    const res = await fetch(`${server.url}/api/health`);
    await res.text();
    return res.status;
  }

  async function counter(series: string): Promise<number> {
    return (await scrape(server.url)).samples.get(series) ?? 0;
  }

  /** A fresh agent on a fresh fixture, stored and acked; its host row. */
  async function connectedAgent(name: string) {
    const root = path.join(tmp, name);
    await buildScenario(root, 'dual-gpu');
    const { token } = await createEnrollmentToken(handle.db, { ttlSeconds: 600, maxUses: 1 });
    const known = new Set((await handle.db.select().from(hosts)).map((r) => r.id));
    const started = startAgent([
      '--server',
      server.url,
      '--simulate',
      root,
      '--interval',
      '1',
      '--state-dir',
      path.join(tmp, `${name}-state`),
      '--token',
      token,
    ]);
    agents.push(started);
    const host = await poll(async () => {
      const rows = await handle.db.select().from(hosts);
      return rows.find((r) => !known.has(r.id) && r.lastSeq !== null);
    }, 30_000);
    if (host === undefined) throw new Error(`the agent never stored: ${started.stderr()}`);
    return { agent: started, root, host };
  }

  const deltasSent = (agent: AgentProcess) =>
    agent.stderr().split('inventory delta sent').length - 1;

  /** The hot-plugged device is stored for `hostId`, and the stored devices are the host's. */
  async function caughtUp(hostId: string, root: string, agent: AgentProcess) {
    // The agent's backoff may have grown to tens of seconds by now: a generous wait.
    const plugged = await poll(async () => {
      const [row] = await handle.db
        .select()
        .from(devices)
        .where(and(eq(devices.hostId, hostId), eq(devices.address, HOTPLUGGED.address)));
      return row;
    }, 120_000);
    expect(plugged, agent.stderr()).toBeDefined();
    expect(plugged?.status).toBe('ready');
    const scanned = scanJson(root) as { devices: { address: string }[] };
    const stored = await handle.db
      .select({ address: devices.address })
      .from(devices)
      .where(eq(devices.hostId, hostId));
    expect(stored.map((d) => d.address).sort()).toEqual(
      scanned.devices.map((d) => d.address).sort(),
    );
  }

  it('turns the agent away while PostgreSQL refuses connections, and catches up after', async () => {
    const { agent, root, host: before } = await connectedAgent('refuse');
    expect(await healthStatus()).toBe(200);
    const snapshotsBefore = await counter(
      'vfio_fleet_agent_messages_total{type="snapshot",result="ok"}',
    );
    const deltaErrorsBefore = await counter(
      'vfio_fleet_agent_messages_total{type="delta",result="error"}',
    );

    await proxy.cut('refuse');
    expect(
      await poll(async () => ((await healthStatus()) === 503 ? true : undefined), 30_000),
    ).toBe(true);
    await hotplug(root, HOTPLUGGED);
    // The delta could not be stored: the connection was closed with `internal`...
    const failed = await poll(async () => {
      const n = await counter('vfio_fleet_agent_messages_total{type="delta",result="error"}');
      return n > deltaErrorsBefore ? n : undefined;
    }, 30_000);
    expect(failed, agent.stderr()).toBeDefined();
    // ...and the agent came back (with backoff) and was turned away again while the database is down.
    const retried = await poll(async () => {
      const n = await counter('vfio_fleet_agent_messages_total{type="hello",result="error"}');
      return n >= 1 ? n : undefined;
    }, 30_000);
    expect(retried, agent.stderr()).toBeDefined();
    expect(agent.stderr()).toContain('"code":"internal"');
    expect(agent.child.exitCode, agent.stderr()).toBeNull();
    // /metrics still answers, saying the database is down (its gauges are cached for 2 s).
    expect(
      await poll(
        async () => ((await counter('vfio_fleet_database_up')) === 0 ? true : undefined),
        10_000,
      ),
    ).toBe(true);

    await proxy.restore();
    expect(
      await poll(async () => ((await healthStatus()) === 200 ? true : undefined), 30_000),
    ).toBe(true);
    await caughtUp(before.id, root, agent);
    // Resumed, not restarted: the same epoch, a later seq, no new snapshot, and no delta that did
    // not fit the stored state (a change applied twice, or one lost, would have meant a resync).
    const [after] = await handle.db.select().from(hosts).where(eq(hosts.id, before.id));
    expect(after?.epoch).toBe(before.epoch);
    expect(after?.lastSeq).toBeGreaterThan(before.lastSeq ?? 0);
    expect(after?.state).toBe('online');
    expect(await counter('vfio_fleet_agent_messages_total{type="delta",result="resync"}')).toBe(0);
    expect(await counter('vfio_fleet_agent_messages_total{type="snapshot",result="ok"}')).toBe(
      snapshotsBefore,
    );
    expect(
      await poll(
        async () => ((await counter('vfio_fleet_database_up')) === 1 ? true : undefined),
        10_000,
      ),
    ).toBe(true);
    expect(agent.child.exitCode).toBeNull();
  });

  it('answers health promptly while connections are accepted and dropped, and stores the held delta after', async () => {
    // postgres.js keeps re-dialling such a server without failing the query: the delta waits in
    // the ingest until the database is back; health and metrics must not wait with it.
    const { agent, root, host: before } = await connectedAgent('reset');
    await proxy.cut('reset');
    const sent = deltasSent(agent);
    await hotplug(root, HOTPLUGGED);
    expect(await poll(() => (deltasSent(agent) > sent ? true : undefined), 30_000)).toBe(true);
    expect(
      await poll(async () => ((await healthStatus()) === 503 ? true : undefined), 30_000),
    ).toBe(true);
    expect(
      await poll(
        async () => ((await counter('vfio_fleet_database_up')) === 0 ? true : undefined),
        10_000,
      ),
    ).toBe(true);
    expect(agent.child.exitCode, agent.stderr()).toBeNull();

    await proxy.restore();
    expect(
      await poll(async () => ((await healthStatus()) === 200 ? true : undefined), 30_000),
    ).toBe(true);
    await caughtUp(before.id, root, agent);
    const [after] = await handle.db.select().from(hosts).where(eq(hosts.id, before.id));
    expect(after?.epoch).toBe(before.epoch);
    expect(after?.state).toBe('online');
    expect(await counter('vfio_fleet_agent_messages_total{type="delta",result="resync"}')).toBe(0);
    expect(agent.child.exitCode).toBeNull();
  });
});
