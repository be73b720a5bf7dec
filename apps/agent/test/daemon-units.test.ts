// The daemon's pure parts in-process, where exact timing and lost messages can be staged: backoff
// and splay bounds, the endpoint URL, and the inventory stream's seq/ack/base bookkeeping.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type AgentMessage, type HostSnapshot, MAX_WIRE_DEVICES } from '@vfio-fleet/core';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { simulateDirAsRoot } from '../src/commands/run';
import { Backoff, startupSplayMs } from '../src/daemon/backoff';
import { type Clock, systemClock } from '../src/daemon/clock';
import { Connection } from '../src/daemon/connection';
import { InventoryStream } from '../src/daemon/inventory-stream';
import { JobRunner } from '../src/daemon/job-runner';
import { agentEndpointUrl, parseLabels } from '../src/daemon/server-url';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';
import { createLogger } from '../src/logger';
import type { JobOutcome, JobRequest, JobStepEvent } from '../src/rebind/executor';

describe('reconnect timing', () => {
  it('draws full-jitter delays in [0, min(60 s, 1 s × 2^n)] and starts over after reset', () => {
    let r = 0.999_999;
    const backoff = new Backoff({ baseMs: 1_000, capMs: 60_000, random: () => r });
    const top = Array.from({ length: 9 }, () => backoff.next());
    expect(top).toEqual([999, 1_999, 3_999, 7_999, 15_999, 31_999, 59_999, 59_999, 59_999]);
    r = 0;
    expect(backoff.next()).toBe(0);
    r = 0.5;
    backoff.reset();
    expect(backoff.next()).toBe(500);
  });

  it('splays the first dial over at most min(interval, 10 s)', () => {
    expect(startupSplayMs(1_000, () => 0.999)).toBe(999);
    expect(startupSplayMs(60_000, () => 0.999)).toBe(9_990);
    expect(startupSplayMs(60_000, () => 0)).toBe(0);
  });
});

describe('connection timing', () => {
  it('waits the splay before the first dial, then full-jitter backoff between failed ones', async () => {
    // A clock whose timers only record their delay; the test fires them one by one.
    const pending: Array<{ ms: number; fn: () => void }> = [];
    const clock: Clock = {
      now: () => Date.now(),
      setTimeout: (fn, ms) => {
        pending.push({ ms, fn });
        // A real (inert) handle, so the type is the real one.
        return setTimeout(() => undefined, 0);
      },
      clearTimeout: () => undefined,
    };
    let dials = 0;
    const connection = new Connection(
      {
        // Nothing listens on port 9 of localhost: every dial fails at once.
        url: new URL('ws://127.0.0.1:9/api/agent'),
        logger: createLogger('silent'),
        clock,
        random: () => 0.5,
        intervalMs: 1_000,
      },
      {
        hello: () => {
          dials += 1;
          return {
            type: 'hello',
            protocolVersion: 1,
            agentVersion: 'test',
            host: { hostname: 'h', machineId: null, kernelRelease: null },
            auth: { kind: 'enroll', token: 'x'.repeat(16) },
            labels: {},
            resume: null,
            allowRebind: false,
          };
        },
        welcomed: () => undefined,
        message: () => undefined,
        disconnected: () => undefined,
        fatal: () => undefined,
      },
    );
    connection.start();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      await vi.waitFor(() => expect(pending.length).toBeGreaterThan(0));
      const timer = pending.shift();
      delays.push(timer?.ms ?? -1);
      timer?.fn();
    }
    await connection.stop();
    // Splay: half of min(interval, 10 s); then half of 1 s, 2 s, 4 s, 8 s.
    expect(delays).toEqual([500, 500, 1_000, 2_000, 4_000]);
    expect(dials).toBe(5);
  });
});

describe('server URL and labels', () => {
  it('derives the agent endpoint, TLS following the scheme', () => {
    expect(agentEndpointUrl('https://fleet.example.com').href).toBe(
      'wss://fleet.example.com/api/agent',
    );
    expect(agentEndpointUrl('http://10.0.0.5:8080/vfio/?x=1#y').href).toBe(
      'ws://10.0.0.5:8080/vfio/api/agent',
    );
    expect(agentEndpointUrl('wss://fleet.example.com/').href).toBe(
      'wss://fleet.example.com/api/agent',
    );
    expect(() => agentEndpointUrl('ftp://fleet.example.com')).toThrow(/http\(s\)/);
    expect(() => agentEndpointUrl('https://u:p@fleet.example.com')).toThrow(/user name/);
    expect(() => agentEndpointUrl('fleet.example.com')).toThrow(/not a URL/);
  });

  it('splits labels at the first = and rejects duplicates', () => {
    expect(parseLabels(['rack=r1', 'note=a=b'])).toEqual({ rack: 'r1', note: 'a=b' });
    expect(() => parseLabels(['rack'])).toThrow(/key=value/);
    expect(() => parseLabels(['a=1', 'a=2'])).toThrow(/twice/);
  });
});

describe('inventory stream', () => {
  let tmp: string;
  let base: HostSnapshot;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'agent-daemon-units-'));
    await buildScenario(tmp, 'dual-gpu');
    base = await collectHost(new HostFs(tmp));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  function harness(logger = createLogger('silent')) {
    let current = base;
    const sent: AgentMessage[] = [];
    const sink = {
      open: true,
      canSendBulk: () => sink.open,
      send: (m: AgentMessage) => sent.push(m) > 0,
    };
    const stream = new InventoryStream({
      collect: async () => structuredClone(current),
      sink,
      // Never fires during a test: scans are triggered explicitly.
      intervalMs: 3_600_000,
      clock: systemClock,
      logger,
      epoch: 'epoch-1',
    });
    stream.start();
    const without = (address: string): HostSnapshot => ({
      ...current,
      devices: current.devices.filter((d) => d.address !== address),
    });
    return {
      stream,
      sink,
      sent,
      set(next: HostSnapshot) {
        current = next;
      },
      without,
      /** Triggers a scan and waits until it is done. */
      async scan() {
        stream.rescanNow();
        await stream.settled();
      },
    };
  }

  it('bases every delta on the acked state, so a lost delta is subsumed by the next', async () => {
    const h = harness();
    h.stream.connected('snapshot');
    await vi.waitFor(() => expect(h.sent).toHaveLength(1));
    expect(h.sent[0]).toMatchObject({ type: 'snapshot', epoch: 'epoch-1', seq: 1 });
    expect(h.stream.resumePoint()).toBeNull();
    h.stream.ack('epoch-1', 1);
    expect(h.stream.resumePoint()).toEqual({ epoch: 'epoch-1', lastAckedSeq: 1 });

    await h.scan();
    expect(h.sent).toHaveLength(1); // unchanged: nothing

    h.set(h.without('0000:31:00.1'));
    await h.scan();
    expect(h.sent[1]).toMatchObject({
      type: 'delta',
      baseSeq: 1,
      seq: 2,
      delta: { devicesRemoved: ['0000:31:00.1'] },
    });

    // Seq 2 never acked (lost with the socket); the next change still diffs against seq 1.
    h.set(h.without('0000:31:00.0'));
    await h.scan();
    expect(h.sent[2]).toMatchObject({
      type: 'delta',
      baseSeq: 1,
      seq: 3,
      delta: { devicesRemoved: ['0000:31:00.0', '0000:31:00.1'] },
    });

    // Reconnect with resume: whatever came after the ack is re-sent as one delta on seq 1.
    h.stream.disconnected();
    h.stream.connected('ok');
    await vi.waitFor(() => expect(h.sent).toHaveLength(4));
    expect(h.sent[3]).toMatchObject({ type: 'delta', baseSeq: 1, seq: 4 });
    h.stream.ack('epoch-1', 4);
    expect(h.stream.resumePoint()).toEqual({ epoch: 'epoch-1', lastAckedSeq: 4 });
    await h.stream.stop();
  });

  it('defers under backpressure and then sends one coalesced delta; resync sends a snapshot', async () => {
    const h = harness();
    h.stream.connected('snapshot');
    await vi.waitFor(() => expect(h.sent).toHaveLength(1));
    h.stream.ack('epoch-1', 1);

    h.sink.open = false;
    h.set(h.without('0000:31:00.1'));
    await h.scan();
    h.set(h.without('0000:31:00.0'));
    await h.scan();
    expect(h.sent).toHaveLength(1);
    h.sink.open = true;
    await h.scan();
    expect(h.sent).toHaveLength(2);
    expect(h.sent[1]).toMatchObject({
      type: 'delta',
      baseSeq: 1,
      delta: { devicesRemoved: ['0000:31:00.0', '0000:31:00.1'] },
    });

    h.stream.ack('other-epoch', 2); // ignored
    h.stream.resync('test');
    expect(h.stream.resumePoint()).toBeNull();
    await vi.waitFor(() => expect(h.sent).toHaveLength(3));
    expect(h.sent[2]).toMatchObject({ type: 'snapshot', seq: 3 });
    await h.stream.stop();
  });

  it('never sends an inventory over the protocol limits (logged once), and sends it once within', async () => {
    const logger = createLogger('silent');
    const errors = vi.spyOn(logger, 'error');
    const h = harness(logger);
    const template = base.devices[0];
    if (template === undefined) throw new Error('no device');
    const huge = {
      ...base,
      devices: Array.from({ length: MAX_WIRE_DEVICES + 1 }, (_, i) => ({
        ...template,
        address: `0001:${(i >> 8).toString(16).padStart(2, '0')}:${((i >> 3) & 0x1f).toString(16).padStart(2, '0')}.${i & 7}`,
      })),
    };
    h.set(huge);
    h.stream.connected('snapshot');
    await h.stream.settled();
    await h.scan();
    expect(h.sent).toEqual([]);
    expect(errors).toHaveBeenCalledTimes(1);
    expect(String(errors.mock.calls[0]?.[1])).toContain(
      `${MAX_WIRE_DEVICES + 1} PCI functions, over the protocol's ${MAX_WIRE_DEVICES}`,
    );
    h.set(base);
    await h.scan();
    expect(h.sent).toHaveLength(1);
    expect(h.sent[0]).toMatchObject({ type: 'snapshot', seq: 1 });
    await h.stream.stop();
  });
});

describe('job runner', () => {
  const outcome = (jobId: string): JobOutcome => ({
    jobId,
    status: 'succeeded',
    reason: null,
    failedStep: null,
    kernelError: null,
    before: [],
    after: [],
    persistence: null,
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:00:01.000Z',
  });
  const job = (jobId: string, deadlineMs = Date.now() + 60_000) => ({
    type: 'job' as const,
    jobId,
    address: '0000:17:00.0',
    target: 'vfio' as const,
    force: false,
    persist: false,
    deadline: new Date(deadlineMs).toISOString(),
  });

  function harness() {
    const sent: AgentMessage[] = [];
    const runs: string[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const sink = {
      online: true,
      send: (m: AgentMessage) => sink.online && sent.push(m) > 0,
      sendConfirmed: async (m: AgentMessage) => sink.send(m),
    };
    let finished = 0;
    const runner = new JobRunner({
      executor: {
        async execute(request: JobRequest, onStep?: (e: JobStepEvent) => void) {
          runs.push(request.jobId);
          await gate;
          onStep?.({
            jobId: request.jobId,
            phase: 'forward',
            index: 0,
            step: { action: 'modprobe', module: 'vfio_pci', description: 'Load vfio_pci.' },
            status: 'ok',
            startedAt: '2026-01-01T00:00:00.000Z',
            durationMs: 1,
            error: null,
          });
          return outcome(request.jobId);
        },
      },
      sink,
      logger: createLogger('silent'),
      now: () => Date.now(),
      finished: () => {
        finished += 1;
      },
    });
    return { runner, sink, sent, runs, release, finished: () => finished };
  }

  it('keeps a result produced while offline and sends it on the next session', async () => {
    const h = harness();
    h.runner.handle(job('j-1'));
    expect(h.sent.map((m) => m.type)).toEqual(['job-accepted']);
    h.sink.online = false;
    h.release();
    await h.runner.stop();
    expect(h.finished()).toBe(1);
    expect(h.sent.map((m) => m.type)).toEqual(['job-accepted']);

    h.sink.online = true;
    h.runner.connected();
    await vi.waitFor(() =>
      expect(h.sent.map((m) => m.type)).toEqual(['job-accepted', 'job-result']),
    );
    // Delivered: a later session does not repeat it.
    h.runner.connected();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(h.sent.filter((m) => m.type === 'job-result')).toHaveLength(1);
  });

  it('runs a job id once while it is in flight, and refuses one past its deadline unrun', async () => {
    const h = harness();
    h.runner.handle(job('j-2'));
    h.runner.handle(job('j-2'));
    h.runner.handle(job('j-late', Date.now() - 1));
    expect(h.runs).toEqual(['j-2']);
    await vi.waitFor(() =>
      expect(h.sent.find((m) => m.type === 'job-result' && m.jobId === 'j-late')).toMatchObject({
        status: 'refused',
        reason: { code: 'deadline-passed' },
      }),
    );
    h.release();
    await h.runner.stop();
    const types = h.sent.filter((m) => 'jobId' in m && m.jobId === 'j-2').map((m) => m.type);
    expect(types).toEqual(['job-accepted', 'job-accepted', 'job-step', 'job-result']);
  });
});

describe('run --simulate FIXTURE_DIR', () => {
  it('is the short form of --root FIXTURE_DIR --simulate', () => {
    expect(simulateDirAsRoot(['--server', 'http://x', '--simulate', '/fx/a'])).toEqual([
      '--server',
      'http://x',
      '--root',
      '/fx/a',
      '--simulate',
    ]);
    expect(simulateDirAsRoot(['--simulate=/fx/b'])).toEqual(['--root', '/fx/b', '--simulate']);
    expect(simulateDirAsRoot(['--root', '/fx/c', '--simulate', '--allow-rebind'])).toEqual([
      '--root',
      '/fx/c',
      '--simulate',
      '--allow-rebind',
    ]);
  });
});
