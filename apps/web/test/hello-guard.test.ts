// Failed hellos per address: an attacker who shares an address with agents (127.0.0.1, where the
// server's own local agent dials; a NAT; a proxy) makes the server verify no more than the limit
// of its hellos, and refuses the rest unverified; agents whose credential the server has accepted
// keep connecting from that address throughout. Against the real server and a real agent.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseServerMessage } from '@vfio-fleet/core';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createEnrollmentToken, hashSecret } from '../src/gateway/credentials';
import { FailedHelloLimiter, HelloGuard } from '../src/gateway/hello-guard';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  hello,
  poll,
  RawClient,
  startAgent,
  startFleet,
} from './helpers/harness';
import { scrape } from './helpers/scrape';

const LIMITS = { maxFailures: 5, windowMs: 60_000 };
const STRANGER = { kind: 'credential', agentId: randomUUID(), secret: 'A'.repeat(43) } as const;

describe('the failed-hello limiter on a fake clock', () => {
  it('counts failures in a sliding window, and hellos in flight as failures until they succeed', () => {
    let now = 0;
    const limiter = new FailedHelloLimiter({ maxFailures: 2, windowMs: 60_000 }, () => now);
    // Two verifications at once fill the window; a third must wait, whatever they turn out to be.
    expect(limiter.tryReserve('a')).toBe(true);
    expect(limiter.tryReserve('a')).toBe(true);
    expect(limiter.tryReserve('a')).toBe(false);
    expect(limiter.tryReserve('b')).toBe(true);
    // A success gives its place back; a failure keeps it for the window.
    expect(limiter.settle('a', false)).toBe(false);
    expect(limiter.settle('a', true)).toBe(false);
    now = 30_000;
    expect(limiter.tryReserve('a')).toBe(true);
    expect(limiter.settle('a', true)).toBe(true);
    expect(limiter.tryReserve('a')).toBe(false);
    expect(limiter.retryAfterSeconds('a')).toBe(30);
    // The first failure leaves the window: one place again.
    now = 60_001;
    expect(limiter.tryReserve('a')).toBe(true);
    expect(limiter.tryReserve('a')).toBe(false);
  });

  it('keeps at most maxAddresses addresses, forgetting the stalest', () => {
    const limiter = new FailedHelloLimiter({ maxFailures: 1, windowMs: 60_000 }, () => 0, 100);
    for (let i = 0; i < 1_000; i += 1) limiter.record(`10.0.${i >> 8}.${i & 255}`);
    // The newest are remembered (and refused), the oldest were forgotten (a fresh window).
    expect(limiter.tryReserve('10.0.3.231')).toBe(false);
    expect(limiter.tryReserve('10.0.0.0')).toBe(true);
  });

  it('lets a credential it has accepted past the limit, and only with its secret', () => {
    const guard = new HelloGuard(new FailedHelloLimiter({ maxFailures: 1, windowMs: 60_000 }));
    const agent = { kind: 'credential', agentId: randomUUID(), secret: 'S'.repeat(43) } as const;
    const first = guard.admit('a', STRANGER);
    expect(first).not.toBeNull();
    first?.failed();
    // This failure used up the address's last place: the gateway logs that once.
    expect(first?.done()).toBe(true);
    expect(first?.done()).toBe(false);
    expect(guard.admit('a', STRANGER)).toBeNull();
    expect(guard.admit('a', agent)).toBeNull();
    guard.remember(agent.agentId, hashSecret(agent.secret));
    expect(guard.admit('a', agent)).not.toBeNull();
    expect(guard.admit('a', { ...agent, secret: 'W'.repeat(43) })).toBeNull();
    // Rejected after all (revoked meanwhile): forgotten, and counted.
    const revoked = guard.admit('a', agent);
    revoked?.failed();
    revoked?.done();
    expect(guard.admit('a', agent)).toBeNull();
  });
});

/** A hello with a credential nobody issued: the error it got and the close code. */
async function helloOutcome(
  wsUrl: string,
  auth: unknown,
  forwardedFor?: string,
): Promise<{ code: string; fatal: boolean; close: number }> {
  const ws = new WebSocket(
    wsUrl,
    forwardedFor === undefined ? {} : { headers: { 'x-forwarded-for': forwardedFor } },
  );
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let error = { code: 'none', fatal: false };
  ws.on('message', (data) => {
    const parsed = parseServerMessage(Buffer.from(data as Buffer));
    if (parsed.ok && parsed.message.type === 'error') {
      error = { code: parsed.message.code, fatal: parsed.message.fatal };
    }
  });
  const closed = new Promise<number>((resolve) => ws.once('close', resolve));
  ws.send(JSON.stringify(hello(auth)));
  const close = await closed;
  return { ...error, close };
}

let tmp: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-hello-guard-'));
});
afterAll(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('failed hellos against the real server (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, { failedHelloLimits: LIMITS, trustProxy: true });
  });
  afterAll(async () => {
    await fleet?.close();
  });

  const counter = async (name: string) => (await scrape(fleet.url)).samples.get(name) ?? 0;
  const AUTH_FAILURES = 'vfio_fleet_agent_auth_failures_total';
  const REFUSED = 'vfio_fleet_agent_rate_limited_total{limit="failed-hellos"}';

  it('counts the address the trusted proxy appended, and never refuses the handshake', async () => {
    const attacker = '198.51.100.7';
    for (let i = 0; i < LIMITS.maxFailures; i += 1) {
      expect(await helloOutcome(fleet.wsUrl, STRANGER, attacker)).toEqual({
        code: 'auth-failed',
        fatal: true,
        close: 1008,
      });
    }
    const refused = { code: 'rate-limited', fatal: false, close: 1013 };
    expect(await helloOutcome(fleet.wsUrl, STRANGER, attacker)).toEqual(refused);
    // What the client put before the proxy's entry does not matter.
    expect(await helloOutcome(fleet.wsUrl, STRANGER, `10.0.0.1, ${attacker}`)).toEqual(refused);
    expect((await helloOutcome(fleet.wsUrl, STRANGER, '198.51.100.8')).code).toBe('auth-failed');
  });

  it('verifies no more of an attacker’s hellos than the limit, and lets agents at its address keep connecting', async () => {
    // A real agent on 127.0.0.1, as the server's own local agent is, connected before the attack;
    // and a raw client's credential.
    const root = path.join(tmp, `host-${driver}`);
    await buildScenario(root, 'dual-gpu');
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600, maxUses: 1 });
    const args = [
      '--server',
      fleet.url,
      '--simulate',
      root,
      '--interval',
      '1',
      '--state-dir',
      path.join(tmp, `state-${driver}`),
    ];
    let agent = startAgent([...args, '--token', token]);
    agents.push(agent);
    const connected = (a: AgentProcess) =>
      a.stderr().includes('"msg":"connected"') ? true : undefined;
    expect(await poll(() => connected(agent), 15_000), agent.stderr()).toBe(true);
    const raw = await RawClient.connect(fleet.wsUrl);
    const { token: rawToken } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60 });
    raw.send(hello({ kind: 'enroll', token: rawToken }));
    const credential = (await raw.next('welcome')).credential;
    if (credential === null) throw new Error('no credential after enrollment');
    raw.close();

    // The attack: three times the limit at once, from the same address (no proxy header).
    const failuresBefore = await counter(AUTH_FAILURES);
    const refusedBefore = await counter(REFUSED);
    const outcomes = await Promise.all(
      Array.from({ length: 3 * LIMITS.maxFailures }, () =>
        helloOutcome(fleet.wsUrl, { ...STRANGER, agentId: randomUUID() }),
      ),
    );
    const count = (code: string, close: number) =>
      outcomes.filter((o) => o.code === code && o.close === close).length;
    // Verified no faster than the limit, however many arrive at once; the rest refused unread.
    expect(count('auth-failed', 1008)).toBe(LIMITS.maxFailures);
    expect(count('rate-limited', 1013)).toBe(2 * LIMITS.maxFailures);
    expect(await counter(AUTH_FAILURES)).toBe(failuresBefore + LIMITS.maxFailures);
    expect(await counter(REFUSED)).toBe(refusedBefore + 2 * LIMITS.maxFailures);
    // A wrong secret for a known agent id is a stranger's hello like any other.
    expect(
      (
        await helloOutcome(fleet.wsUrl, {
          ...credential,
          kind: 'credential',
          secret: 'B'.repeat(43),
        })
      ).code,
    ).toBe('rate-limited');

    // The agent at that address reconnects, each time at once: killed and restarted twice.
    for (let i = 0; i < 2; i += 1) {
      await agent.kill();
      agent = startAgent(args);
      agents.push(agent);
      expect(await poll(() => connected(agent), 15_000), agent.stderr()).toBe(true);
      expect(agent.stderr()).not.toContain('rate-limited');
    }
    for (let i = 0; i < 3; i += 1) {
      const again = await RawClient.connect(fleet.wsUrl);
      again.send(hello({ kind: 'credential', ...credential }));
      expect((await again.next('welcome')).agentId).toBe(credential.agentId);
      again.close();
    }
    expect(await counter(AUTH_FAILURES)).toBe(failuresBefore + LIMITS.maxFailures);

    // An agent this process has not accepted yet waits for the window (non-fatal: it redials).
    const { token: lateToken } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60 });
    expect(await helloOutcome(fleet.wsUrl, { kind: 'enroll', token: lateToken })).toEqual({
      code: 'rate-limited',
      fatal: false,
      close: 1013,
    });
  });
});
