// Secrets the server hands out: enrollment tokens are pasted into `--token TOKEN`, so none may
// start with '-' (node's parseArgs reads that as an option and the agent refuses the command).
// And their limits at the gateway, as raw clients meet them: a one-use token raced by many
// agents enrolls one, an expired or revoked token none, a revoked credential never reconnects.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { agentCredentials, enrollmentTokens, hosts } from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createEnrollmentToken,
  hashSecret,
  newSecret,
  revokeCredential,
  secretMatches,
} from '../src/gateway/credentials';
import { drivers, type Fleet, hello, poll, RawClient, startFleet } from './helpers/harness';
import { scenarioSnapshot } from './helpers/inventory';

describe('newSecret', () => {
  it('never starts with a character a command line would read as an option', () => {
    // Without the guard, 1 in 32 base64url secrets starts with '-' or '_': 3,000 draws would
    // show dozens.
    const secrets = Array.from({ length: 3_000 }, () => newSecret());
    expect(secrets.filter((s) => !/^[A-Za-z0-9]/.test(s))).toEqual([]);
    expect(new Set(secrets).size).toBe(secrets.length);
    for (const s of secrets.slice(0, 10)) expect(s).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('is checked against its stored hash only', () => {
    const secret = newSecret();
    expect(secretMatches(secret, hashSecret(secret))).toBe(true);
    expect(secretMatches(`${secret}x`, hashSecret(secret))).toBe(false);
  });
});

describe.each(drivers)('enrollment tokens and credentials at the gateway (%s)', (driver) => {
  let fleet: Fleet;
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'web-credentials-'));
    // The failed hellos here are the point: the per-address limiter is not what is tested.
    fleet = await startFleet(driver, {
      failedHelloLimits: { maxFailures: 1_000, windowMs: 60_000 },
    });
  });
  afterAll(async () => {
    await fleet?.close();
    await rm(tmp, { recursive: true, force: true });
  });

  /** The first message the server sent the client (welcome or error). */
  async function firstAnswer(client: RawClient) {
    const answer = await poll(() => client.received[0], 10_000);
    if (answer === undefined) throw new Error('no answer to hello');
    return { client, answer };
  }

  /** A hello with `auth`, and its answer. */
  async function helloWith(auth: unknown, hostname = 'raced') {
    const client = await RawClient.connect(fleet.wsUrl);
    client.send(hello(auth, { host: { hostname, machineId: null, kernelRelease: null } }));
    return firstAnswer(client);
  }

  it('enrolls exactly one of many agents racing for a one-use token', async () => {
    const { token, id } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    const before = (await fleet.db.select().from(hosts)).length;
    // Every pooled database connection open (PostgreSQL opens them on demand, which would space
    // the enrollments out), every socket open, then every hello in one tick: they really overlap.
    await Promise.all(
      Array.from({ length: 10 }, () => fleet.db.execute(sql`SELECT pg_sleep(0.05)`)),
    );
    const clients = await Promise.all(
      Array.from({ length: 12 }, () => RawClient.connect(fleet.wsUrl)),
    );
    for (const [i, client] of clients.entries()) {
      const host = { hostname: `racer-${i}`, machineId: null, kernelRelease: null };
      client.send(hello({ kind: 'enroll', token }, { host }));
    }
    const results = await Promise.all(clients.map(firstAnswer));
    const welcomed = results.filter((r) => r.answer.type === 'welcome');
    expect(welcomed).toHaveLength(1);
    for (const { answer } of results.filter((r) => r.answer.type !== 'welcome')) {
      expect(answer).toMatchObject({ type: 'error', code: 'auth-failed', fatal: true });
    }
    const [row] = await fleet.db
      .select({ uses: enrollmentTokens.uses })
      .from(enrollmentTokens)
      .where(eq(enrollmentTokens.id, id));
    expect(row?.uses).toBe(1);
    expect(await fleet.db.select().from(hosts)).toHaveLength(before + 1);
    for (const { client } of results) client.close();
  });

  it('refuses an expired and a revoked token', async () => {
    const expired = await createEnrollmentToken(fleet.db, { ttlSeconds: -1 });
    const revoked = await createEnrollmentToken(fleet.db, { ttlSeconds: 60 });
    await fleet.db
      .update(enrollmentTokens)
      .set({ revokedAt: new Date() })
      .where(eq(enrollmentTokens.id, revoked.id));
    for (const { token } of [expired, revoked]) {
      const { client, answer } = await helloWith({ kind: 'enroll', token });
      expect(answer).toMatchObject({ type: 'error', code: 'auth-failed', fatal: true });
      expect(await client.closed()).toBe(1008);
    }
  });

  it("never lets a second hello switch a connection to another agent's credential", async () => {
    const enroll = async (hostname: string) => {
      const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
      const { client, answer } = await helloWith({ kind: 'enroll', token }, hostname);
      if (answer.type !== 'welcome' || answer.credential === null) throw new Error('not enrolled');
      return { client, agentId: answer.agentId, credential: answer.credential };
    };
    const victim = await enroll('victim');
    const attacker = await enroll('attacker');
    attacker.client.send(
      hello(
        { kind: 'credential', ...victim.credential },
        { host: { hostname: 'victim', machineId: null, kernelRelease: null } },
      ),
    );
    const refused = await attacker.client.next('error');
    expect(refused).toMatchObject({ code: 'protocol-violation', fatal: false });
    // A snapshot after it is still the attacker's own: the victim's host row is untouched.
    const snapshot = await scenarioSnapshot(tmp, 'dual-gpu');
    attacker.client.send({ type: 'snapshot', epoch: 'switch', seq: 1, snapshot });
    await attacker.client.next('ack');
    const rows = await fleet.db.select().from(hosts);
    const byAgent = new Map(rows.map((r) => [r.agentId, r]));
    expect(byAgent.get(victim.agentId)?.lastSeq).toBeNull();
    expect(byAgent.get(attacker.agentId)?.lastSeq).toBe(1);
    victim.client.close();
    attacker.client.close();
  });

  it("closes a revoked credential's connection, and refuses it on every reconnect", async () => {
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    const { client, answer } = await helloWith({ kind: 'enroll', token }, 'to-be-revoked');
    if (answer.type !== 'welcome' || answer.credential === null) throw new Error('not enrolled');
    const credential = { kind: 'credential', ...answer.credential };
    expect(await revokeCredential(fleet.db, answer.agentId)).toBe(true);
    expect(await client.closed()).toBe(1008);
    for (let i = 0; i < 2; i++) {
      const again = await helloWith(credential, 'to-be-revoked');
      expect(again.answer).toMatchObject({ type: 'error', code: 'auth-failed', fatal: true });
      expect(await again.client.closed()).toBe(1008);
    }
    const [row] = await fleet.db
      .select({ revokedAt: agentCredentials.revokedAt })
      .from(agentCredentials)
      .where(eq(agentCredentials.agentId, answer.agentId));
    expect(row?.revokedAt).not.toBeNull();
  });
});
