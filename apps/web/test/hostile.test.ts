// Raw WebSocket clients sending what no honest agent sends: a seq gap, oversized and malformed
// frames, unknown types, forged credentials, a hello claiming another host, a snapshot whose
// readiness lies. Each gets a clear error, only that connection is affected, the server survives.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { MAX_SNAPSHOT_MESSAGE_BYTES } from '@vfio-fleet/core';
import { agentCredentials, devices, hosts } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { and, eq } from 'drizzle-orm';
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

interface ScannedDevice {
  address: string;
  readiness: { status: string; reasons: unknown[] };
}
interface Scanned {
  host: { hostname: string; machineId: string | null };
  devices: ScannedDevice[];
}

let tmp: string;
let scanned: Scanned;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-hostile-'));
  const root = path.join(tmp, 'dual-gpu');
  await buildScenario(root, 'dual-gpu');
  scanned = scanJson(root) as Scanned;
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('agent gateway against hostile clients (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, {
      heartbeatSeconds: 30,
      offlineAfterSeconds: 6,
      helloTimeoutMs: 1_000,
    });
  });
  afterAll(async () => {
    await fleet.close();
  });

  /** An enrolled raw client that has sent one snapshot (seq 1 of `epoch`). */
  async function enrolled(epoch: string, snapshot: unknown = scanned) {
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    const client = await RawClient.connect(fleet.wsUrl);
    client.send(hello({ kind: 'enroll', token }));
    const welcome = await client.next('welcome');
    expect(welcome.resume).toBe('snapshot');
    if (welcome.credential === null) throw new Error('no credential after enrollment');
    client.send({ type: 'snapshot', epoch, seq: 1, snapshot });
    await client.next('ack');
    const [host] = await fleet.db.select().from(hosts).where(eq(hosts.agentId, welcome.agentId));
    if (host === undefined) throw new Error('no host row');
    return { client, credential: welcome.credential, hostId: host.id };
  }

  it('answers a delta on the wrong base with resync, and resumes only at the stored seq', async () => {
    const { client, credential } = await enrolled('e1');
    const emptyDelta = { devicesAdded: [], devicesChanged: [], devicesRemoved: [] };
    client.send({ type: 'delta', epoch: 'e1', baseSeq: 5, seq: 6, delta: emptyDelta });
    const resync = await client.next('resync');
    expect(resync.reason).toContain('not the delta');
    client.send({ type: 'delta', epoch: 'other', baseSeq: 1, seq: 2, delta: emptyDelta });
    expect((await client.next('resync', client.received.indexOf(resync) + 1)).reason).toContain(
      'epoch other',
    );
    // A delta removing a device the state lacks does not fit: resync, nothing written.
    const from = client.received.length;
    client.send({
      type: 'delta',
      epoch: 'e1',
      baseSeq: 1,
      seq: 2,
      delta: { ...emptyDelta, devicesRemoved: ['0000:ee:00.0'] },
    });
    expect((await client.next('resync', from)).reason).toContain('does not fit');
    client.close();

    const again = await RawClient.connect(fleet.wsUrl);
    again.send(
      hello({ kind: 'credential', ...credential }, { resume: { epoch: 'e1', lastAckedSeq: 1 } }),
    );
    expect((await again.next('welcome')).resume).toBe('ok');
    again.close();
    const stale = await RawClient.connect(fleet.wsUrl);
    stale.send(
      hello({ kind: 'credential', ...credential }, { resume: { epoch: 'e1', lastAckedSeq: 0 } }),
    );
    expect((await stale.next('welcome')).resume).toBe('snapshot');
    stale.close();
  });

  it('stores its own readiness, not the one a lying agent sends', async () => {
    const lying = structuredClone(scanned);
    for (const device of lying.devices) device.readiness = { status: 'ready', reasons: [] };
    const { client, hostId } = await enrolled('liar', lying);
    const [nvme] = await fleet.db
      .select()
      .from(devices)
      .where(and(eq(devices.hostId, hostId), eq(devices.address, '0000:4b:00.0')));
    expect(nvme?.status).toBe('blocked');
    expect(nvme?.facts.readiness.status).toBe('blocked');
    client.close();
  });

  it('rejects malformed frames with clear errors, closing only that connection after too many', async () => {
    const { client: bystander, hostId } = await enrolled('bystander');
    const { client } = await enrolled('hostile');

    client.send('{not json');
    const notJson = await client.next('error');
    expect(notJson).toMatchObject({ code: 'invalid-message', fatal: false });
    expect(notJson.message).toContain('not-json');

    let from = client.received.length;
    client.send({ type: 'launch-missiles' });
    const unknown = await client.next('error', from);
    expect(unknown.fatal).toBe(false);
    expect(unknown.message).toMatch(/type/);

    from = client.received.length;
    client.send({
      type: 'snapshot',
      epoch: 'hostile',
      seq: 2,
      snapshot: { devices: 'all of them' },
    });
    const malformed = await client.next('error', from);
    expect(malformed.message).toContain('snapshot');

    // A control message over 64 KiB is refused by size, still without closing.
    from = client.received.length;
    client.send({
      type: 'ping',
      nonce: 'n1',
      sentAt: new Date().toISOString(),
      pad: 'x'.repeat(70_000),
    });
    expect((await client.next('error', from)).message).toContain('too-large');

    // The fifth bad frame closes this connection, and only it.
    from = client.received.length;
    client.send('[]');
    const last = await client.next('error', from);
    expect(last.fatal).toBe(true);
    expect(await client.closed()).toBe(1008);

    bystander.send({ type: 'ping', nonce: 'still-here', sentAt: new Date().toISOString() });
    expect((await bystander.next('pong')).nonce).toBe('still-here');
    const [row] = await fleet.db.select().from(hosts).where(eq(hosts.id, hostId));
    expect(row?.state).toBe('online');
    bystander.close();
  });

  it('drops a frame over the snapshot limit unread (close 1009)', async () => {
    const { client } = await enrolled('huge');
    client.send('x'.repeat(MAX_SNAPSHOT_MESSAGE_BYTES + 1));
    expect(await client.closed()).toBe(1009);
  });

  it('refuses forged credentials, bad tokens, messages before hello and other protocols', async () => {
    const { credential } = await enrolled('victim');
    const cases: [unknown, string][] = [
      [
        hello({ kind: 'credential', agentId: credential.agentId, secret: 'A'.repeat(43) }),
        'auth-failed',
      ],
      [
        hello({ kind: 'credential', agentId: 'no-such-agent', secret: credential.secret }),
        'auth-failed',
      ],
      [hello({ kind: 'enroll', token: 'B'.repeat(43) }), 'auth-failed'],
      [{ type: 'ping', nonce: 'n', sentAt: new Date().toISOString() }, 'protocol-violation'],
      [
        hello({ kind: 'credential', ...credential }, { protocolVersion: 2 }),
        'unsupported-protocol',
      ],
      ['not json at all', 'invalid-message'],
    ];
    for (const [frame, code] of cases) {
      const client = await RawClient.connect(fleet.wsUrl);
      client.send(frame);
      const error = await client.next('error');
      expect(error, JSON.stringify(frame).slice(0, 80)).toMatchObject({ code, fatal: true });
      expect(await client.closed()).toBe(1008);
    }
  });

  it('keeps a snapshot claiming another host under the authenticated host', async () => {
    const { hostId: victimId, client: victim } = await enrolled('victim2');
    const [before] = await fleet.db.select().from(hosts).where(eq(hosts.id, victimId));
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    const impostor = await RawClient.connect(fleet.wsUrl);
    impostor.send(
      hello(
        { kind: 'enroll', token },
        {
          host: {
            hostname: scanned.host.hostname,
            machineId: scanned.host.machineId,
            kernelRelease: null,
          },
        },
      ),
    );
    const welcome = await impostor.next('welcome');
    // Same hostname and machine-id as the victim, and a snapshot with one device fewer.
    const fewer = { ...scanned, devices: scanned.devices.slice(1) };
    impostor.send({ type: 'snapshot', epoch: 'victim2', seq: 1, snapshot: fewer });
    await impostor.next('ack');

    const [own] = await fleet.db.select().from(hosts).where(eq(hosts.agentId, welcome.agentId));
    expect(own?.id).not.toBe(victimId);
    const victimDevices = await fleet.db.select().from(devices).where(eq(devices.hostId, victimId));
    expect(victimDevices).toHaveLength(scanned.devices.length);
    const [after] = await fleet.db.select().from(hosts).where(eq(hosts.id, victimId));
    expect(after?.lastSeq).toBe(before?.lastSeq);
    expect(after?.updatedAt.getTime()).toBe(before?.updatedAt.getTime());
    impostor.close();
    victim.close();
  });

  it('throttles a flooding connection by backpressure, without starving other hosts', async () => {
    const { client: bystander } = await enrolled('calm');
    const { client } = await enrolled('flood');
    const from = client.received.length;
    for (let seq = 2; seq < 202; seq++) {
      client.ws.send(JSON.stringify({ type: 'snapshot', epoch: 'flood', seq, snapshot: scanned }));
    }
    // While the flood is being worked through, another host is answered at once.
    bystander.send({ type: 'ping', nonce: 'calm', sentAt: new Date().toISOString() });
    expect((await bystander.next('pong')).nonce).toBe('calm');
    const acksWhenAnswered = client.received.slice(from).filter((m) => m.type === 'ack').length;
    // Every frame of the flood is handled, in order, none dropped or reordered.
    const last = await poll(
      () => client.received.slice(from).filter((m) => m.type === 'ack').length === 200 || undefined,
      60_000,
    );
    expect(last).toBe(true);
    // Not starved: the bystander was answered while the flood was still being worked through, not
    // after its 200 frames. Counted in acks rather than milliseconds, so a loaded CI machine
    // does not turn it red.
    expect(acksWhenAnswered).toBeLessThan(200);
    const acks = client.received.slice(from).flatMap((m) => (m.type === 'ack' ? [m.seq] : []));
    expect(acks).toEqual(Array.from({ length: 200 }, (_, i) => i + 2));
    client.close();
    bystander.close();
  });

  it('closes a connection that does not say hello in time', async () => {
    const client = await RawClient.connect(fleet.wsUrl);
    const error = await client.next('error');
    expect(error).toMatchObject({ code: 'protocol-violation', fatal: true });
    expect(error.message).toContain('hello');
    expect(await client.closed()).toBe(1008);
  });

  it('disconnects an agent whose credential another server process revoked, at its next heartbeat', async () => {
    const { client, credential } = await enrolled('revoked-elsewhere');
    // Straight in the database, as another process's revokeCredential would: no socket to close here.
    await fleet.db
      .update(agentCredentials)
      .set({ revokedAt: new Date() })
      .where(eq(agentCredentials.agentId, credential.agentId));
    const revokedAt = Date.now();
    let nonce = 0;
    const code = await poll(() => {
      if (client.closeCode !== null) return client.closeCode;
      nonce += 1;
      client.send({ type: 'ping', nonce: `p${nonce}`, sentAt: new Date().toISOString() });
      return undefined;
    }, 10_000);
    expect(code).toBe(1008);
    // The offline window is 6 s, so last_seen is written (and revocation read) every 2 s.
    expect(Date.now() - revokedAt).toBeLessThan(5_000);
    expect(client.received.find((m) => m.type === 'error')).toMatchObject({
      code: 'auth-failed',
      fatal: true,
    });
  });

  it('keeps every other agent connected when one credential is revoked elsewhere', async () => {
    const { client: other } = await enrolled('not-revoked');
    const { client: victim, credential } = await enrolled('revoked-not-other');
    await fleet.db
      .update(agentCredentials)
      .set({ revokedAt: new Date() })
      .where(eq(agentCredentials.agentId, credential.agentId));
    // Both ping for longer than two last_seen periods (2 s here): each ping past a period asks
    // for a write, and that write reads the credential of its own host only.
    let nonce = 0;
    const until = Date.now() + 5_000;
    while (Date.now() < until && victim.closeCode === null) {
      nonce += 1;
      for (const c of [other, victim]) {
        c.send({ type: 'ping', nonce: `q${nonce}`, sentAt: new Date().toISOString() });
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(await victim.closed()).toBe(1008);
    const end = Date.now() + 2_500;
    while (Date.now() < end) {
      nonce += 1;
      other.send({ type: 'ping', nonce: `q${nonce}`, sentAt: new Date().toISOString() });
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(other.closeCode).toBeNull();
    expect(other.received.some((m) => m.type === 'error')).toBe(false);
  });

  it('answers job frames about a job this host does not have with a non-fatal error', async () => {
    const { client } = await enrolled('jobs');
    client.send({ type: 'job-accepted', jobId: 'j1' });
    client.send({ type: 'ping', nonce: 'after-job', sentAt: new Date().toISOString() });
    expect((await client.next('pong')).nonce).toBe('after-job');
    expect(client.received.find((m) => m.type === 'error')).toMatchObject({
      code: 'protocol-violation',
      fatal: false,
    });
    expect(client.closeCode).toBeNull();
    client.close();
  });
});
