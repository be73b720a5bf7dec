// Real agents (child processes of the agent bundle, `--simulate` over fixture trees) against the
// real server on port 0: enrollment and credential reuse, ingest with server-side readiness,
// silence when nothing changes, a hot-plug as a delta, revocation, missed heartbeats, health.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { agentCredentials, devices, hosts } from '@vfio-fleet/db';
import { buildScenario, hotplug } from '@vfio-fleet/host-fixtures';
import { eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken, revokeCredential } from '../src/gateway/credentials';
import type { Health } from '../src/server';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  startAgent,
  startFleet,
} from './helpers/harness';

let tmp: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-agents-'));
});
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function fixture(name: string): Promise<{ root: string; stateDir: string }> {
  const root = path.join(tmp, name, 'host');
  await buildScenario(root, 'dual-gpu');
  return { root, stateDir: path.join(tmp, name, 'state') };
}

function agent(fleet: Fleet, where: { root: string; stateDir: string }, extra: string[] = []) {
  const started = startAgent([
    '--server',
    fleet.url,
    '--simulate',
    where.root,
    '--interval',
    '1',
    '--state-dir',
    where.stateDir,
    ...extra,
  ]);
  agents.push(started);
  return started;
}

async function hostRow(fleet: Fleet, predicate: (row: typeof hosts.$inferSelect) => boolean) {
  return poll(async () => {
    const rows = await fleet.db.select().from(hosts);
    return rows.find(predicate);
  }, 15_000);
}

/** A NIC that was not there before, in an IOMMU group of its own. */
const HOTPLUGGED = {
  address: '0000:b1:00.0',
  vendorId: '8086',
  deviceId: '1572',
  classCode: '020000',
  iommuGroup: 90,
  driver: null,
};

describe.each(drivers)('agent gateway with real agents (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1, offlineAfterSeconds: 3 });
  });
  afterAll(async () => {
    await fleet.close();
  });

  it('enrolls with a token, stores the fixture with server-computed readiness, stays quiet, takes a hot-plug as a delta', async () => {
    const where = await fixture(`main-${driver}`);
    const { token } = await createEnrollmentToken(fleet.db, {
      label: 't',
      ttlSeconds: 600,
      maxUses: 1,
    });
    const first = agent(fleet, where, ['--token', token, '--label', 'rack=r12']);

    const host = await hostRow(fleet, (r) => r.hostname === 'gpu-node-01' && r.lastSeq !== null);
    expect(host, first.stderr()).toBeDefined();
    if (host === undefined) return;
    expect(host.state).toBe('online');
    const rows = await fleet.db.select().from(devices).where(eq(devices.hostId, host.id));
    const byAddress = new Map(rows.map((r) => [r.address, r]));
    // From the README's dual-gpu excerpt: the GPU group is ready, the root NVMe and boot VGA not.
    expect(byAddress.get('0000:17:00.0')?.status).toBe('ready');
    expect(byAddress.get('0000:4b:00.0')?.status).toBe('blocked');
    expect(byAddress.get('0000:4b:00.0')?.firstReason).toBeTruthy();
    expect(byAddress.get('0000:02:00.0')?.status).toBe('blocked');

    // Nothing changes on the host: three scan intervals later no device row was rewritten.
    const stamps = new Map(rows.map((r) => [r.address, r.updatedAt.getTime()]));
    await new Promise((resolve) => setTimeout(resolve, 3_200));
    const later = await fleet.db.select().from(devices).where(eq(devices.hostId, host.id));
    expect(later.map((r) => [r.address, r.updatedAt.getTime()])).toEqual(
      rows.map((r) => [r.address, stamps.get(r.address)]),
    );
    const [same] = await fleet.db.select().from(hosts).where(eq(hosts.id, host.id));
    expect(same?.lastSeq).toBe(host.lastSeq);
    // Heartbeats on time keep the host online on its first connection (the window is 3 s here,
    // so a sweep that missed the coalesced last_seen writes would have cut it off and back).
    expect(same?.state).toBe('online');
    expect(same?.connectedAt?.getTime()).toBe(host.connectedAt?.getTime());
    expect(same?.lastSeenAt?.getTime()).toBeGreaterThan(host.lastSeenAt?.getTime() ?? 0);

    await hotplug(where.root, HOTPLUGGED);
    const plugged = await poll(async () => {
      const [row] = await fleet.db
        .select()
        .from(devices)
        .where(eq(devices.address, HOTPLUGGED.address));
      return row;
    }, 15_000);
    expect(plugged?.hostId).toBe(host.id);
    expect(plugged?.status).toBe('ready');
    const [after] = await fleet.db.select().from(hosts).where(eq(hosts.id, host.id));
    // Same stream, one step on: it came as a delta, not a new snapshot under a new epoch.
    expect(after?.epoch).toBe(host.epoch);
    expect(after?.lastSeq).toBeGreaterThan(host.lastSeq ?? 0);
    expect(first.stderr()).not.toContain('"level":50');

    // Restart without the token: the stored credential logs in as the same host.
    await first.kill('SIGTERM');
    const offline = await hostRow(fleet, (r) => r.id === host.id && r.state === 'offline');
    expect(offline).toBeDefined();
    agent(fleet, where);
    const back = await hostRow(
      fleet,
      (r) => r.id === host.id && r.state === 'online' && r.epoch !== host.epoch,
    );
    expect(back).toBeDefined();
    expect(await fleet.db.select().from(hosts)).toHaveLength(1);
    const creds = await fleet.db.select().from(agentCredentials);
    expect(creds.map((c) => c.hostId)).toEqual([host.id]);
    // Stored hashed: the row holds no secret an agent could present.
    expect(creds[0]?.secretHash).toMatch(/^[0-9a-f]{64}$/);

    // The token had one use: a second enrollment with it is refused.
    const other = await fixture(`reuse-${driver}`);
    const refused = agent(fleet, other, ['--token', token]);
    expect(await refused.exited).toBe(3);
    expect(refused.stderr()).toContain('auth-failed');
  });

  it('disconnects an agent at once when its credential is revoked', async () => {
    const where = await fixture(`revoke-${driver}`);
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600, maxUses: 1 });
    const known = new Set((await fleet.db.select().from(hosts)).map((r) => r.id));
    const run = agent(fleet, where, ['--token', token]);
    const host = await hostRow(fleet, (r) => !known.has(r.id) && r.lastSeq !== null);
    expect(host).toBeDefined();
    await poll(() => (fleet.server.gateway.connectedAgents > 0 ? true : undefined), 10_000);
    const revokedAt = Date.now();
    const [cred] = await fleet.db
      .select()
      .from(agentCredentials)
      .where(eq(agentCredentials.hostId, host?.id ?? ''));
    expect(await revokeCredential(fleet.db, cred?.agentId ?? '')).toBe(true);
    // A fatal auth-failed makes the agent exit 3 instead of redialling.
    expect(await run.exited).toBe(3);
    expect(Date.now() - revokedAt).toBeLessThan(5_000);
    expect(run.stderr()).toContain('revoked');
  });

  it('marks a killed agent offline after the heartbeat window, and answers /api/health', async () => {
    const where = await fixture(`killed-${driver}`);
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600 });
    const run = agent(fleet, where, ['--token', token]);
    const health = await poll(async () => {
      const res = (await (await fetch(`${fleet.url}/api/health`)).json()) as Health;
      return res.agents === 1 ? res : undefined;
    }, 15_000);
    expect(health).toMatchObject({ ok: true, database: 'up', agents: 1 });
    expect(health?.hosts.online).toBeGreaterThanOrEqual(1);

    // SIGSTOP: the process lives and its socket stays open but silent, so only the heartbeat
    // window (not a close event) can tell the server it is gone.
    run.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    const gone = await poll(async () => {
      const res = (await (await fetch(`${fleet.url}/api/health`)).json()) as Health;
      return res.agents === 0 ? res : undefined;
    }, 15_000);
    expect(gone).toBeDefined();
    expect(Date.now() - stoppedAt).toBeGreaterThan(2_000);
    const online = await fleet.db.select().from(hosts).where(eq(hosts.state, 'online'));
    expect(online).toHaveLength(0);
    run.child.kill('SIGKILL');

    const missing = await fetch(`${fleet.url}/nope`);
    expect(missing.status).toBe(404);
  });
});
