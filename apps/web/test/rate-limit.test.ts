// Per-agent rate limits against the real server: a connection flooding frames is slowed (every
// frame still answered, in order) and counted, one that keeps flooding is closed `rate-limited`,
// on time and logged once, and an honest real agent on the same server is untouched (failed hellos
// per address: hello-guard.test.ts). Limits are shortened here so the test takes seconds.
import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hosts } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { FrameBucket, remoteAddress } from '../src/gateway/rate-limit';
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
import { memoryLogger } from './helpers/memory-logger';
import { scrape } from './helpers/scrape';

let tmp: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-rate-limit-'));
});
afterAll(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
  await rm(tmp, { recursive: true, force: true });
});

const FRAME_LIMITS = { burst: 20, perSecond: 50, maxThrottledMs: 5_000 };
/** How long the server waits for a close frame before it destroys the socket. */
const CLOSE_GRACE_MS = 1_000;
/** Scheduling on a loaded 2-core machine. */
const SLACK_MS = 1_500;

describe('the frame bucket on a fake clock', () => {
  it('lets a burst through, then throttles by the debt, closes after long, forgives after a full refill', () => {
    let now = 0;
    const bucket = new FrameBucket({ burst: 3, perSecond: 2, maxThrottledMs: 2_000 }, () => now);
    expect([bucket.take(), bucket.take(), bucket.take()].map((r) => r.kind)).toEqual([
      'ok',
      'ok',
      'ok',
    ]);
    // One frame over: -1 token, paused until 1 frame is earned back (2 tokens at 2/s = 1 s).
    expect(bucket.take()).toEqual({
      kind: 'throttle',
      pauseMs: 1_000,
      throttledForMs: 0,
      started: true,
    });
    expect(bucket.overdue()).toBeNull();
    // A flooder: sends again the moment reading resumes. Every frame it sends is counted (and the
    // gateway handles each), but over time no faster than the refill rate allows, with one frame
    // of debt; once throttled without a break for over maxThrottledMs, it is closed.
    let frames = 5; // the burst of 3 and the 2 over it, at 0 ms
    let verdict = bucket.take();
    while (verdict.kind !== 'close') {
      if (verdict.kind === 'throttle') now += verdict.pauseMs;
      frames += 1;
      verdict = bucket.take();
    }
    expect(verdict.throttledForMs).toBeGreaterThan(2_000);
    expect(frames).toBeLessThanOrEqual(3 + (now / 1000) * 2 + 2);
    expect(frames).toBeGreaterThan(5);
    expect(bucket.overdue()).toBe(verdict.throttledForMs);
    // Quiet long enough to refill the whole bucket: the throttled stretch is over.
    now = 10_000;
    expect(bucket.take().kind).toBe('ok');
  });

  it('ends a pause at the stretch deadline at the latest, however deep the debt', () => {
    let now = 0;
    const bucket = new FrameBucket({ burst: 2, perSecond: 1, maxThrottledMs: 3_000 }, () => now);
    bucket.take();
    bucket.take();
    // A pile of frames read in one go (what a paused socket's buffers hold when it resumes).
    const verdicts = Array.from({ length: 100 }, () => bucket.take());
    expect(verdicts.filter((v) => v.kind === 'throttle' && v.started)).toHaveLength(1);
    const last = verdicts.at(-1);
    // 100 frames of debt at 1/s would pause 101 s: the pause stops just past the 3 s deadline.
    expect(last).toEqual({ kind: 'throttle', pauseMs: 3_001, throttledForMs: 0, started: false });
    now = 2_999;
    expect(bucket.overdue()).toBeNull();
    now = 3_001;
    expect(bucket.overdue()).toBe(3_001);
  });

  it('reads X-Forwarded-For only behind a trusted proxy, and only its last entry', () => {
    const request = {
      headers: { 'x-forwarded-for': '10.9.9.9, 203.0.113.5' },
      socket: { remoteAddress: '::ffff:127.0.0.1' },
    } as unknown as IncomingMessage;
    expect(remoteAddress(request, true)).toBe('203.0.113.5');
    expect(remoteAddress(request, false)).toBe('127.0.0.1');
  });
});

describe.each(drivers)('per-agent rate limits (%s)', (driver) => {
  const log = memoryLogger();
  let fleet: Fleet;
  let honest: AgentProcess;
  let honestHostId: string;

  beforeAll(async () => {
    fleet = await startFleet(driver, {
      heartbeatSeconds: 1,
      helloTimeoutMs: 5_000,
      frameLimits: FRAME_LIMITS,
      trustProxy: true,
      logger: log.logger,
    });
    // A real agent, pinging every second and rescanning every second: it must never be slowed.
    const root = path.join(tmp, `honest-${driver}`);
    await buildScenario(root, 'dual-gpu');
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600, maxUses: 1 });
    honest = startAgent([
      '--server',
      fleet.url,
      '--simulate',
      root,
      '--interval',
      '1',
      '--state-dir',
      path.join(tmp, `honest-${driver}-state`),
      '--token',
      token,
    ]);
    agents.push(honest);
    const host = await poll(async () => {
      const [row] = await fleet.db.select().from(hosts);
      return row?.lastSeq !== null ? row : undefined;
    }, 30_000);
    if (host === undefined) throw new Error(`the honest agent never stored: ${honest.stderr()}`);
    honestHostId = host.id;
  });
  afterAll(async () => {
    await honest?.kill();
    await fleet.close();
  });

  async function enrolledRaw(): Promise<RawClient> {
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    const client = await RawClient.connect(fleet.wsUrl);
    client.send(hello({ kind: 'enroll', token }));
    await client.next('welcome');
    return client;
  }

  it('slows a flooding connection without dropping a frame, counts it, and leaves an honest agent alone', async () => {
    const before = await scrape(fleet.url);
    const limitedBefore =
      before.samples.get('vfio_fleet_agent_rate_limited_total{limit="frames"}') ?? 0;
    const pingsBefore =
      before.samples.get('vfio_fleet_agent_messages_total{type="ping",result="ok"}') ?? 0;

    const flooder = await enrolledRaw();
    const FLOOD = 100; // 5 × the burst: throttled for ~1.6 s at 50/s, well inside 5 s
    for (let i = 0; i < FLOOD; i += 1) {
      flooder.send({ type: 'ping', nonce: `n${i}`, sentAt: new Date().toISOString() });
    }
    // Nothing dropped: every ping is answered, in order.
    const pongs = await poll(() => {
      const got = flooder.received.filter((m) => m.type === 'pong');
      return got.length >= FLOOD ? got : undefined;
    }, 60_000);
    expect(
      pongs?.map((m) => (m.type === 'pong' ? m.nonce : '')),
      JSON.stringify(flooder.received.slice(-3)),
    ).toEqual(Array.from({ length: FLOOD }, (_, i) => `n${i}`));
    expect(flooder.received.some((m) => m.type === 'error')).toBe(false);
    expect(flooder.closeCode).toBeNull();

    const after = await scrape(fleet.url);
    expect(
      after.samples.get('vfio_fleet_agent_rate_limited_total{limit="frames"}'),
    ).toBeGreaterThan(limitedBefore);
    expect(
      after.samples.get('vfio_fleet_agent_messages_total{type="ping",result="ok"}'),
    ).toBeGreaterThanOrEqual(pingsBefore + FLOOD);
    flooder.close();

    // The honest agent (pinging every second throughout) is still connected, online and ungrudged.
    expect(fleet.server.gateway.connectedAgents).toBeGreaterThanOrEqual(1);
    // The flooder enrolled a host of its own, so the honest one is looked up by its id.
    const [row] = await fleet.db.select().from(hosts).where(eq(hosts.id, honestHostId));
    expect(row?.state).toBe('online');
    expect(honest.child.exitCode).toBeNull();
    expect(honest.stderr()).not.toContain('rate-limited');
  });

  it('closes a connection that stays over the limit at its deadline, logging the stretch once', async () => {
    const flooder = await enrolledRaw();
    const agentId = flooder.received.find((m) => m.type === 'welcome')?.agentId;
    let sent = 0;
    const started = performance.now();
    // Keeps the bucket empty for longer than maxThrottledMs; paused reading makes the client's
    // own buffer grow, so the loop also stops once plenty is queued.
    const timer = setInterval(() => {
      if (flooder.ws.readyState !== WebSocket.OPEN || flooder.ws.bufferedAmount > 4_000_000) return;
      for (let i = 0; i < 50; i += 1) {
        flooder.send({ type: 'ping', nonce: `f${sent}`, sentAt: new Date().toISOString() });
        sent += 1;
      }
    }, 20);
    try {
      const error = await flooder.next('error', 0, 60_000);
      const errorAfterMs = performance.now() - started;
      expect(error).toMatchObject({ code: 'rate-limited', fatal: true });
      expect(await flooder.closed(10_000)).toBe(1008);
      const closedAfterMs = performance.now() - started;
      // The burst is spent by the first frames, so the stretch starts with the flood: the error
      // comes at maxThrottledMs, and the socket is gone a close grace later though the server is
      // not reading it (the client's answering close frame is never read).
      expect(errorAfterMs).toBeGreaterThanOrEqual(FRAME_LIMITS.maxThrottledMs - 100);
      expect(errorAfterMs).toBeLessThan(FRAME_LIMITS.maxThrottledMs + SLACK_MS);
      expect(closedAfterMs - errorAfterMs).toBeLessThan(CLOSE_GRACE_MS + SLACK_MS);
    } finally {
      clearInterval(timer);
      flooder.close();
    }
    // Throttled, not dropped: it got far fewer pongs than it sent pings before being cut off.
    const pongs = flooder.received.filter((m) => m.type === 'pong').length;
    expect(pongs).toBeLessThan(sent);
    // Thousands of frames over the rate, two lines: the stretch and the close.
    const rateLines = log
      .lines()
      .filter((line) => line.agentId === agentId && /frame rate/.test(String(line.msg)));
    expect(rateLines.map((line) => line.msg)).toEqual([
      'agent connection over its frame rate: reading paused',
      'agent connection closed: over its frame rate for too long',
    ]);
    expect(honest.child.exitCode).toBeNull();
    expect(honest.stderr()).not.toContain('rate-limited');
  });
});
