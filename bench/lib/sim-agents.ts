// The load generator: thousands of simulated agents in this one process, each a real WebSocket
// to the server on loopback speaking protocol v1 as apps/agent's daemon does (enroll, then
// credential; snapshot after a `resume: snapshot` welcome; deltas against the last acked seq;
// pings; jobs accepted, stepped and answered once per id, a re-delivered id answered from the
// stored result; reconnect with the agent's own full-jitter backoff).
//
// Frames are cut from a handful of pre-serialised templates (a 200-device snapshot is ~300 KB of
// JSON): stringifying one per agent would cost the generator more CPU than the server it loads.
import { randomBytes, randomUUID } from 'node:crypto';
import { Backoff, DEFAULT_BACKOFF } from '@vfio-fleet/agent';
import {
  type AgentMessage,
  DRIVERS_PROBE_PATH,
  encodeMessage,
  type PlanPrecondition,
  type PlanStep,
  PROTOCOL_VERSION,
  parseServerMessage,
  type ServerMessage,
} from '@vfio-fleet/core';
import WebSocket from 'ws';
import { hostName, type SyntheticFleet } from './synthetic-fleet';

const TEMPLATE_HOST = '@@HOSTNAME@@';
const TEMPLATE_MACHINE = '@@MACHINEID@@';
const TEMPLATE_EPOCH = '@@EPOCH@@';
const TEMPLATE_SEQ = 987_654_321;

/** Pre-serialised snapshot and delta frames for every (host variant, change parity). */
export class FrameTemplates {
  private readonly snapshots: string[] = [];
  private readonly deltas: string[] = [];
  private readonly gpus: string[];
  readonly variants: number;
  readonly devicesPerHost: number;

  constructor(fleet: SyntheticFleet, variants = 8) {
    this.variants = variants;
    this.devicesPerHost = fleet.devicesPerHost;
    this.gpus = fleet
      .snapshot(0)
      .devices.filter((d) => d.vendorId === '10de')
      .map((d) => d.address);
    for (let parity = 0; parity < 2; parity++) {
      for (let v = 0; v < variants; v++) {
        const snapshot = fleet.changed(v, parity);
        snapshot.host.hostname = TEMPLATE_HOST;
        snapshot.host.machineId = TEMPLATE_MACHINE;
        this.snapshots.push(
          encodeMessage({ type: 'snapshot', epoch: TEMPLATE_EPOCH, seq: TEMPLATE_SEQ, snapshot }),
        );
        // The delta into state `parity` from the other one (changes 2 and 1: parity 0 and 1).
        this.deltas.push(JSON.stringify(fleet.delta(v, parity === 0 ? 2 : 1)));
      }
    }
  }

  snapshot(host: number, change: number, epoch: string, seq: number, machineId: string): string {
    const template = this.snapshots[(change % 2) * this.variants + (host % this.variants)] ?? '';
    return template
      .replace(`"seq":${TEMPLATE_SEQ}`, `"seq":${seq}`)
      .replace(TEMPLATE_EPOCH, epoch)
      .replace(TEMPLATE_HOST, hostName(host))
      .replace(TEMPLATE_MACHINE, machineId);
  }

  /**
   * The address of GPU `k` of a host, counted from the host's own offset: k = 0 is the GPU the
   * host leaves unbound and k = 1 the one its deltas change, so jobs take k >= 2.
   */
  gpuFor(host: number, k: number): string {
    return this.gpus[(host + k) % this.gpus.length] ?? '';
  }

  delta(host: number, change: number, epoch: string, baseSeq: number, seq: number): string {
    const delta = this.deltas[(change % 2) * this.variants + (host % this.variants)] ?? '{}';
    return `{"type":"delta","epoch":"${epoch}","baseSeq":${baseSeq},"seq":${seq},"delta":${delta}}`;
  }
}

/** What the generator records; every latency in milliseconds. */
export class LoadStats {
  welcomeMs: number[] = [];
  ackMs: number[] = [];
  snapshotAckMs: number[] = [];
  deltaAckMs: number[] = [];
  pongMs: number[] = [];
  welcomes = { ok: 0, snapshot: 0 };
  messagesSent = 0;
  /** Of messagesSent, by what the generator sent them for (what makes up an offered rate). */
  sent = { snapshot: 0, delta: 0, ping: 0 };
  messagesReceived = 0;
  errors: string[] = [];
  resyncs = 0;
  jobDeliveries = 0;
  jobExecutions = 0;
  duplicateExecutions = 0;

  error(text: string): void {
    if (this.errors.length < 50) this.errors.push(text);
  }
}

export interface SimAgentOptions {
  index: number;
  url: string;
  token: string;
  frames: FrameTemplates;
  stats: LoadStats;
  /** Redial after a close (the reconnect storm); off while a scenario closes agents itself. */
  reconnect: boolean;
  /** Before job-result, drop the connection with this probability (the job round trip). */
  dropMidJob?: number;
  /** Send a snapshot when welcomed with `resume: snapshot` (what a real agent does). */
  snapshotOnWelcome: boolean;
}

type Waiter = { sentAt: number; kind: 'snapshot' | 'delta'; resolve: () => void };

export class SimAgent {
  readonly index: number;
  readonly machineId: string;
  private options: SimAgentOptions;
  private ws: WebSocket | null = null;
  private credential: { agentId: string; secret: string } | null = null;
  private epoch = randomUUID();
  private seq = 0;
  private lastAckedSeq: number | null = null;
  /** Inventory state: how many changes were made (parity selects the template). */
  private change = 0;
  /** The change count of the newest acked state (what a delta must start from). */
  private ackedChange = 0;
  private readonly waiters = new Map<number, Waiter>();
  private readonly pings = new Map<string, number>();
  private readonly jobResults = new Map<string, string>();
  private readonly backoff = new Backoff({ ...DEFAULT_BACKOFF, random: Math.random });
  private stopped = false;
  private welcomeWaiter: ((resume: 'ok' | 'snapshot') => void) | null = null;
  welcomed = false;
  helloSentAt = 0;
  /** performance.now() of the last welcome (the reconnect storm reads it). */
  welcomedAt = 0;
  lastResume: 'ok' | 'snapshot' | null = null;

  constructor(options: SimAgentOptions) {
    this.options = options;
    this.index = options.index;
    this.machineId = randomBytes(16).toString('hex');
  }

  get hostname(): string {
    return hostName(this.index);
  }

  /** The job round trip and the reconnect storm change how the agent treats its connection. */
  setJobBehaviour(change: { reconnect: boolean; dropMidJob: number }): void {
    this.options = { ...this.options, ...change };
    this.stopped = false;
  }

  get enrolled(): boolean {
    return this.credential !== null;
  }

  /** Dials and says hello; resolves at welcome with what the server asked for. */
  connect(): Promise<'ok' | 'snapshot'> {
    return new Promise((resolve, reject) => {
      this.welcomeWaiter = resolve;
      const ws = new WebSocket(this.options.url, { perMessageDeflate: false });
      this.ws = ws;
      ws.on('open', () => {
        this.helloSentAt = performance.now();
        this.send({
          type: 'hello',
          protocolVersion: PROTOCOL_VERSION,
          agentVersion: '0.1.0',
          host: {
            hostname: hostName(this.index),
            machineId: this.machineId,
            kernelRelease: '6.12.117+deb12-amd64',
          },
          auth:
            this.credential === null
              ? { kind: 'enroll', token: this.options.token }
              : { kind: 'credential', ...this.credential },
          labels: {
            rack: `r${String(this.index % 40).padStart(2, '0')}`,
            cluster: `c${this.index % 4}`,
            role: this.index % 3 === 0 ? 'gpu' : 'nic',
          },
          // They run jobs (the server queues none for a host whose agent does not say so).
          allowRebind: true,
          resume:
            this.lastAckedSeq === null
              ? null
              : { epoch: this.epoch, lastAckedSeq: this.lastAckedSeq },
        });
      });
      ws.on('message', (data) => this.onMessage(String(data)));
      ws.on('error', (error) => {
        if (!this.welcomed) reject(error);
      });
      ws.on('close', () => {
        const wasWelcomed = this.welcomed;
        this.welcomed = false;
        this.ws = null;
        for (const waiter of this.waiters.values()) waiter.resolve();
        this.waiters.clear();
        if (!wasWelcomed) reject(new Error(`agent ${this.index}: closed before welcome`));
        if (this.options.reconnect && !this.stopped) this.redial();
      });
    });
  }

  private redial(): void {
    const delay = this.backoff.next();
    setTimeout(() => {
      if (this.stopped) return;
      this.connect().then(
        () => this.backoff.reset(),
        () => undefined, // the close handler dials again
      );
    }, delay).unref();
  }

  private send(message: AgentMessage | string): void {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.ws.send(typeof message === 'string' ? message : encodeMessage(message));
    this.options.stats.messagesSent += 1;
  }

  private onMessage(raw: string): void {
    const { stats } = this.options;
    stats.messagesReceived += 1;
    const parsed = parseServerMessage(raw);
    if (!parsed.ok) {
      stats.error(`agent ${this.index}: unparseable server frame: ${parsed.error.message}`);
      return;
    }
    const message: ServerMessage = parsed.message;
    switch (message.type) {
      case 'welcome': {
        if (message.credential !== null) this.credential = message.credential;
        this.welcomed = true;
        this.welcomedAt = performance.now();
        this.lastResume = message.resume;
        stats.welcomeMs.push(this.welcomedAt - this.helloSentAt);
        stats.welcomes[message.resume] += 1;
        if (message.resume === 'snapshot') {
          // The server holds nothing of this stream: a new epoch, from the current inventory.
          this.epoch = randomUUID();
          this.lastAckedSeq = null;
          this.ackedChange = this.change;
          if (this.options.snapshotOnWelcome) void this.sendSnapshot();
        }
        this.welcomeWaiter?.(message.resume);
        this.welcomeWaiter = null;
        return;
      }
      case 'ack': {
        if (message.epoch !== this.epoch) return;
        for (const [seq, waiter] of this.waiters) {
          if (seq > message.seq) continue;
          const ms = performance.now() - waiter.sentAt;
          stats.ackMs.push(ms);
          if (waiter.kind === 'snapshot') stats.snapshotAckMs.push(ms);
          else stats.deltaAckMs.push(ms);
          this.waiters.delete(seq);
          waiter.resolve();
        }
        if (this.lastAckedSeq === null || message.seq > this.lastAckedSeq) {
          this.lastAckedSeq = message.seq;
          this.ackedChange = this.pendingChange.get(message.seq) ?? this.ackedChange;
        }
        for (const seq of this.pendingChange.keys())
          if (seq <= message.seq) this.pendingChange.delete(seq);
        return;
      }
      case 'resync': {
        stats.resyncs += 1;
        this.epoch = randomUUID();
        this.lastAckedSeq = null;
        void this.sendSnapshot();
        return;
      }
      case 'pong': {
        const sentAt = this.pings.get(message.nonce);
        if (sentAt !== undefined) {
          stats.pongMs.push(performance.now() - sentAt);
          this.pings.delete(message.nonce);
        }
        return;
      }
      case 'ping':
        this.send({ type: 'pong', nonce: message.nonce });
        return;
      case 'job':
        this.onJob(message.jobId, message.address);
        return;
      case 'job-cancel':
        return;
      case 'error':
        stats.error(`agent ${this.index}: ${message.code}: ${message.message}`);
        return;
    }
  }

  /** The change count each unacked seq carries, so an ack moves ackedChange with it. */
  private readonly pendingChange = new Map<number, number>();

  /** A full snapshot of the current inventory; resolves at its ack (or when the socket closes). */
  sendSnapshot(): Promise<void> {
    this.seq += 1;
    const seq = this.seq;
    const frame = this.options.frames.snapshot(
      this.index,
      this.change,
      this.epoch,
      seq,
      this.machineId,
    );
    this.pendingChange.set(seq, this.change);
    return this.expectAck(seq, 'snapshot', frame);
  }

  /** One device changes; the delta is against the newest acked state, as the real agent sends it. */
  sendDelta(): Promise<void> {
    if (this.lastAckedSeq === null || this.ackedChange !== this.change || !this.welcomed) {
      return Promise.resolve();
    }
    this.change += 1;
    this.seq += 1;
    const seq = this.seq;
    const frame = this.options.frames.delta(
      this.index,
      this.change,
      this.epoch,
      this.lastAckedSeq,
      seq,
    );
    this.pendingChange.set(seq, this.change);
    return this.expectAck(seq, 'delta', frame);
  }

  /** A fresh stream (as after an agent restart): new epoch, full snapshot. */
  restartStream(): Promise<void> {
    this.epoch = randomUUID();
    this.lastAckedSeq = null;
    return this.sendSnapshot();
  }

  private expectAck(seq: number, kind: Waiter['kind'], frame: string): Promise<void> {
    return new Promise((resolve) => {
      if (!this.welcomed) {
        resolve();
        return;
      }
      this.waiters.set(seq, { sentAt: performance.now(), kind, resolve });
      this.send(frame);
      this.options.stats.sent[kind] += 1;
    });
  }

  ping(): void {
    if (!this.welcomed) return;
    const nonce = randomUUID();
    this.pings.set(nonce, performance.now());
    if (this.pings.size > 8) this.pings.delete(this.pings.keys().next().value ?? '');
    this.send({ type: 'ping', nonce, sentAt: new Date().toISOString() });
    this.options.stats.sent.ping += 1;
  }

  private onJob(jobId: string, address: string): void {
    const { stats } = this.options;
    stats.jobDeliveries += 1;
    const stored = this.jobResults.get(jobId);
    if (stored !== undefined) {
      // A re-delivered id: the stored result, never a second run (what the real agent does).
      this.send(`{"type":"job-accepted","jobId":"${jobId}"}`);
      this.send(stored);
      return;
    }
    stats.jobExecutions += 1;
    this.send({ type: 'job-accepted', jobId });
    const startedAt = new Date().toISOString();
    const before: PlanPrecondition[] = [{ address, driver: 'nvidia', driverOverride: null }];
    const after: PlanPrecondition[] = [{ address, driver: 'vfio-pci', driverOverride: 'vfio-pci' }];
    const step: PlanStep = {
      action: 'probe',
      address,
      path: DRIVERS_PROBE_PATH,
      value: address,
      description: `probe ${address}`,
    };
    this.send({
      type: 'job-step',
      jobId,
      phase: 'forward',
      index: 0,
      step,
      status: 'ok',
      startedAt,
      durationMs: 1,
      error: null,
    });
    const result = encodeMessage({
      type: 'job-result',
      jobId,
      status: 'succeeded',
      reason: null,
      failedStep: null,
      kernelError: null,
      before,
      after,
      persistence: null,
      startedAt,
      finishedAt: new Date().toISOString(),
    });
    this.jobResults.set(jobId, result);
    if (Math.random() < (this.options.dropMidJob ?? 0)) {
      // Mid-job: accepted and stepped, the result not yet sent. It goes out after the redial,
      // when the server re-delivers the job.
      this.ws?.terminate();
      return;
    }
    this.send(result);
  }

  /** Points the agent at another server (a fresh one for the memory measurement). */
  retarget(url: string): void {
    this.options = { ...this.options, url };
  }

  /** Closes for good (no redial). */
  close(): void {
    this.stopped = true;
    this.ws?.terminate();
  }

  /** Closes the socket abruptly, redialling if `reconnect` is on (a dropped connection). */
  drop(): void {
    this.ws?.terminate();
  }
}
