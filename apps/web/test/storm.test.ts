// The gateway under a storm of agents: enrollments with one unlimited token run side by side and
// are still counted; large frames wait for the server-wide ingest gate unparsed, every one is
// still stored and acknowledged, and a host whose frames wait in line is not marked offline
// meanwhile (its last_seen_at is only written once its frame's turn comes).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { devices, enrollmentTokens, hosts } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { eq, inArray, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken } from '../src/gateway/credentials';
import {
  drivers,
  type Fleet,
  hello,
  poll,
  RawClient,
  scanJson,
  startFleet,
} from './helpers/harness';
import { sample } from './helpers/scrape';

let tmp: string;
let scanned: { devices: unknown[] };

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-ingest-gate-'));
  const root = path.join(tmp, 'dual-gpu');
  await buildScenario(root, 'dual-gpu');
  scanned = scanJson(root) as { devices: unknown[] };
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Unknown fields are dropped by the schema: padding makes a frame large enough to be gated. */
const PADDING = 'x'.repeat(80 * 1024);

describe.each(drivers)('a storm of agents (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, {
      heartbeatSeconds: 30,
      offlineAfterSeconds: 6,
      maxConcurrentIngests: 1,
    });
  });
  afterAll(async () => {
    await fleet.close();
  });

  async function enroll(name: string, token?: string) {
    token ??= (await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 })).token;
    const client = await RawClient.connect(fleet.wsUrl);
    client.send(
      hello(
        { kind: 'enroll', token },
        { host: { hostname: name, machineId: null, kernelRelease: null } },
      ),
    );
    const welcome = await client.next('welcome');
    return { client, agentId: welcome.agentId };
  }

  it('enrolls many agents with one unlimited token at once, and counts every use', async () => {
    const { token, id } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60 });
    const clients = await Promise.all(
      Array.from({ length: 15 }, (_, i) => enroll(`rollout-${i}`, token)),
    );
    expect(new Set(clients.map((c) => c.agentId)).size).toBe(15);
    // Counted in batches after the enrollments commit, within about a second.
    const uses = await poll(async () => {
      const [row] = await fleet.db
        .select({ uses: enrollmentTokens.uses })
        .from(enrollmentTokens)
        .where(eq(enrollmentTokens.id, id));
      return row?.uses === 15 ? row.uses : undefined;
    }, 10_000);
    expect(uses).toBe(15);
    for (const { client } of clients) client.close();
  });

  it('stores and acknowledges every one of many large snapshots sent at once through one slot', async () => {
    const clients = await Promise.all(Array.from({ length: 12 }, (_, i) => enroll(`storm-${i}`)));
    for (const [i, { client }] of clients.entries()) {
      client.send({
        type: 'snapshot',
        epoch: `storm-${i}`,
        seq: 1,
        snapshot: scanned,
        padding: PADDING,
      });
    }
    for (const [i, { client }] of clients.entries()) {
      const ack = await client.next('ack', 0, 30_000);
      expect(ack).toMatchObject({ epoch: `storm-${i}`, seq: 1 });
    }
    const [stored] = await fleet.db
      .select({ n: sql<number>`count(*)::int` })
      .from(devices)
      .innerJoin(hosts, eq(hosts.id, devices.hostId))
      .where(
        inArray(
          hosts.agentId,
          clients.map((c) => c.agentId),
        ),
      );
    expect(stored?.n).toBe(12 * scanned.devices.length);
    for (const { client } of clients) client.close();
  });

  it('acknowledges a resent unchanged snapshot without storing it again, and stores a changed one', async () => {
    const { client, agentId } = await enroll('resender');
    const unchanged = () =>
      sample(fleet.url, 'vfio_fleet_agent_messages_total{type="snapshot",result="unchanged"}');
    const before = (await unchanged()) ?? 0;
    const frame = (seq: number, snapshot: unknown) => ({
      type: 'snapshot',
      epoch: 'resend',
      seq,
      snapshot,
      padding: PADDING,
    });
    client.send(frame(1, scanned));
    await client.next('ack');
    const stored = async () => {
      const [row] = await fleet.db
        .select({ updatedAt: devices.updatedAt })
        .from(devices)
        .innerJoin(hosts, eq(hosts.id, devices.hostId))
        .where(eq(hosts.agentId, agentId))
        .limit(1);
      return row?.updatedAt.getTime();
    };
    const firstWrite = await stored();
    // The same content again (a reconnecting agent's resend): acked unparsed, nothing rewritten.
    const from = client.received.length;
    client.send(frame(2, { ...scanned, collectedAt: new Date().toISOString() }));
    expect(await client.next('ack', from)).toMatchObject({ seq: 2 });
    expect(((await unchanged()) ?? 0) - before).toBe(1);
    expect(await stored()).toBe(firstWrite);
    const [position] = await fleet.db
      .select({ lastSeq: hosts.lastSeq })
      .from(hosts)
      .where(eq(hosts.agentId, agentId));
    expect(position?.lastSeq).toBe(2);
    // A changed device is not the stored content: the full path stores it.
    const changed = structuredClone(scanned) as { devices: { driverOverride: string | null }[] };
    const first = changed.devices[0];
    if (first !== undefined) first.driverOverride = 'vfio-pci';
    const from3 = client.received.length;
    client.send(frame(3, changed));
    expect(await client.next('ack', from3)).toMatchObject({ seq: 3 });
    expect(((await unchanged()) ?? 0) - before).toBe(1);
    const [override] = await fleet.db
      .select({ driverOverride: devices.driverOverride })
      .from(devices)
      .innerJoin(hosts, eq(hosts.id, devices.hostId))
      .where(eq(hosts.agentId, agentId))
      .orderBy(devices.address)
      .limit(1);
    expect(override?.driverOverride).toBe('vfio-pci');
    client.close();
  });

  it('does not mark offline a host heard from whose last_seen_at is not written yet', async () => {
    const { client, agentId } = await enroll('heard-from');
    client.send({ type: 'ping', nonce: 'n1', sentAt: new Date().toISOString() });
    await client.next('pong');
    // As if its frames had waited behind a storm: the database says it was last seen long ago.
    await fleet.db
      .update(hosts)
      .set({ lastSeenAt: new Date(Date.now() - 60_000) })
      .where(eq(hosts.agentId, agentId));
    await fleet.server.gateway.sweep();
    const [row] = await fleet.db
      .select({ state: hosts.state })
      .from(hosts)
      .where(eq(hosts.agentId, agentId));
    expect(row?.state).toBe('online');
    expect(client.closeCode).toBeNull();
    client.close();
  });
});
