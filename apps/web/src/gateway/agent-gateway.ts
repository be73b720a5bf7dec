/**
 * The agents' WebSocket endpoint (`/api/agent`, protocol v1 of docs/protocol.md, server side).
 *
 * It shares the HTTP server with everything else on the port (Next.js next), and answers every
 * upgrade request on it: its own path goes to the handshake, any other gets 404 (upgrade.ts).
 * Hellos are admitted by hello-guard.ts and verified by hello-auth.ts. Every frame is size-bounded
 * and parsed by core's parseAgentMessageForServer (which drops the agent's readiness verdicts
 * unread: the server assesses the facts itself); the host a message is stored under is the one the
 * credential belongs to, never a name or machine-id the payload claims. A connection's messages
 * are handled one at a time (a promise chain), so an ack always follows the write it
 * acknowledges, in order.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  type AgentMessageForServer,
  encodeMessage,
  type HelloMessage,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  type ParsedMessage,
  PROTOCOL_VERSION,
  parseAgentMessageForServer,
  type ServerMessage,
} from '@vfio-fleet/core';
import { type Database, hosts, textArrayLiteral } from '@vfio-fleet/db';
import { and, eq, inArray, lt, lte, sql } from 'drizzle-orm';
import { type RawData, type WebSocket, WebSocketServer } from 'ws';
import { ServerError } from '../errors';
import type { JobDispatcher } from '../jobs/dispatcher';
import type { Logger } from '../logger';
import { Gate } from '../ops/gate';
import { type GatewayMetrics, NO_GATEWAY_METRICS } from '../ops/metrics';
import { finishYielding } from '../ops/yield';
import { requestUrl } from '../request-url';
import { registerDisconnect, TokenUseCounter } from './credentials';
import { verifyHello } from './hello-auth';
import {
  DEFAULT_FAILED_HELLO_LIMITS,
  FailedHelloLimiter,
  type FailedHelloLimits,
  type HelloAdmission,
  HelloGuard,
} from './hello-guard';
import { ingestDelta, ingestSnapshot, ingestUnchangedSnapshot } from './ingest';
import { LastSeenWriter } from './last-seen';
import { DEFAULT_FRAME_LIMITS, FrameBucket, type FrameLimits, remoteAddress } from './rate-limit';
import { type RawSnapshotFrame, rawSnapshotFrame } from './raw-snapshot';
import { parseAgentFrameInSlices } from './sliced-parse';
import { answerUpgrade } from './upgrade';

export interface AgentGatewayDeps {
  db: Database;
  logger: Logger;
  /** Sent to agents in `welcome`: how often they ping. */
  heartbeatSeconds?: number;
  /** A host not heard from for this long is marked offline (default 3 × heartbeat). */
  offlineAfterSeconds?: number;
  now?: () => Date;
  /** How long a new connection may take to say hello. */
  helloTimeoutMs?: number;
  /** Unparseable frames tolerated on one connection before it is closed. */
  maxBadFrames?: number;
  /** Counters and histograms for /metrics (default: none). */
  metrics?: GatewayMetrics;
  /** Frames per connection (default DEFAULT_FRAME_LIMITS). */
  frameLimits?: FrameLimits;
  /** Failed hellos per remote address before unknown agents' hellos are refused (hello-guard.ts). */
  failedHelloLimits?: FailedHelloLimits;
  /** Take the client address from X-Forwarded-For (VFIO_FLEET_TRUST_PROXY=1). */
  trustProxy?: boolean;
  /** Delivers jobs to the agents connected here and takes their job messages (default: none). */
  dispatcher?: JobDispatcher;
  /** Large frames (snapshots) parsed and stored at once, server-wide (default 4). */
  maxConcurrentIngests?: number;
}

/** Close codes (RFC 6455): policy violation, and going away when the server stops. */
const CLOSE_POLICY = 1008;
const CLOSE_GOING_AWAY = 1001;
/** A hello refused unverified for its address's failures: the agent redials later. */
const CLOSE_TRY_AGAIN_LATER = 1013;
/** The server could not handle a message (the database is down): the agent reconnects and resends. */
const CLOSE_INTERNAL_ERROR = 1011;
/** last_seen_at is written at most this often per host: thousands of pings must not be thousands of writes. */
const LAST_SEEN_WRITE_MS = 5_000;
/** How long a host's last_seen write waits for other hosts' to go in the same statement. */
const LAST_SEEN_BATCH_MS = 500;
/**
 * Frames one connection may have waiting for their turn before the server stops reading from its
 * socket. An honest agent waits for an ack before its next delta and pings once per heartbeat, so
 * it never gets here; a flooding one is throttled to the speed of the database by TCP backpressure
 * instead of being buffered (up to 8 MiB a frame) in this process.
 */
const MAX_PENDING_FRAMES = 8;
/**
 * Frames larger than this (snapshots; deltas and control messages are smaller) wait for a slot of
 * the server-wide ingest gate before they are parsed: after a server restart or a fleet-wide
 * rollout thousands of agents send a ~300 KB snapshot at the same moment, and parsing them all at
 * once would hold thousands of parsed inventories (megabytes each) while they queue for a handful
 * of database connections. Waiting unparsed, a frame costs its bytes; and its connection, paused,
 * sends nothing more.
 */
const GATED_FRAME_BYTES = 64 * 1024;
const DEFAULT_MAX_CONCURRENT_INGESTS = 4;
/**
 * How long a closing handshake may take before the socket is destroyed (ws's default: 30 s). A
 * peer that never answers the close frame (a silent pre-auth socket, a flooder whose socket is
 * not being read) would otherwise hold its connection that much past its deadline.
 */
const CLOSE_GRACE_MS = 1_000;
/**
 * ws drops a frame over maxPayload (close 1009) before buffering it: nothing larger than the
 * largest legal message (a snapshot) is ever held in memory. A constant, not a literal in the
 * call: @types/ws lacks ws's closeTimeout.
 */
const WSS_OPTIONS = {
  noServer: true,
  maxPayload: MAX_SNAPSHOT_MESSAGE_BYTES,
  closeTimeout: CLOSE_GRACE_MS,
};
/**
 * Frames this large (a host of a couple of thousand devices; the protocol allows 8 MiB) are
 * ingested one at a time, server-wide: each step of one takes up to a few hundred milliseconds of
 * CPU, and several at once would hold the event loop for seconds between two of its turns.
 */
const LARGE_FRAME_BYTES = 1024 * 1024;

interface Session {
  ws: WebSocket;
  agentId: string | null;
  hostId: string | null;
  labels: Readonly<Record<string, string>>;
  badFrames: number;
  lastSeenWrittenAt: number;
  /** When the last frame arrived (before it waited its turn): the sweep spares a host heard from. */
  lastFrameAt: number;
  /** Messages of one connection are handled in order. */
  queue: Promise<void>;
  /** Frames received but not yet handled. */
  pending: number;
  /** The remote address failed hellos are counted against. */
  address: string;
  bucket: FrameBucket;
  /** Set while reading is paused because the connection is over its frame rate. */
  throttle: NodeJS.Timeout | null;
  /** Type of the message being handled, for the metrics of one that fails. */
  handling: string;
  /** The hosts.connected_at this connection wrote at hello. */
  connectedAt: Date | null;
  /** The raw hash of the snapshot frame being handled, stored with it (see resendUnchanged). */
  rawHash: string | null;
  /**
   * Whether the host row may hold a raw hash a resent snapshot could match. False when hello found
   * none (a new host, a cleared inventory) and after a delta (which stores none): resendUnchanged
   * then does not ask the database (a statement per snapshot that cannot match, waiting for a
   * connection behind the fleet's writes, while it holds an ingest slot). True once this
   * connection stored a snapshot, and when hello found one (perhaps another process's, salted
   * differently: then the statement finds no match, and the snapshot takes the full path).
   */
  rawHashStored: boolean;
}

export class AgentGateway {
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly heartbeatSeconds: number;
  private readonly offlineAfterMs: number;
  private readonly now: () => Date;
  private readonly helloTimeoutMs: number;
  private readonly maxBadFrames: number;
  private readonly lastSeenWriteMs: number;
  private readonly lastSeen: LastSeenWriter;
  private readonly wss: WebSocketServer;
  /** Authenticated connections by agent id: revocation and a second login find the socket here. */
  private readonly byAgent = new Map<string, Session>();
  private readonly sessions = new Set<Session>();
  private sweeper: NodeJS.Timeout | null = null;
  private unregister: (() => void) | null = null;
  private readonly detachers: (() => void)[] = [];
  private readonly metrics: GatewayMetrics;
  private readonly frameLimits: FrameLimits;
  private readonly helloGuard: HelloGuard;
  private readonly trustProxy: boolean;
  private readonly dispatcher: JobDispatcher | null;
  /** Each authenticated session's send, as handed to the dispatcher (to unregister that one). */
  private readonly jobSenders = new WeakMap<Session, (message: ServerMessage) => void>();
  private readonly ingestGate: Gate;
  private readonly largeIngestGate: Gate;
  private readonly tokenUses: TokenUseCounter;

  constructor(deps: AgentGatewayDeps) {
    this.db = deps.db;
    this.dispatcher = deps.dispatcher ?? null;
    this.logger = deps.logger.child({ component: 'agent-gateway' });
    this.heartbeatSeconds = deps.heartbeatSeconds ?? 30;
    this.offlineAfterMs = (deps.offlineAfterSeconds ?? 3 * this.heartbeatSeconds) * 1000;
    this.now = deps.now ?? (() => new Date());
    this.helloTimeoutMs = deps.helloTimeoutMs ?? 5_000;
    this.maxBadFrames = deps.maxBadFrames ?? 5;
    // Coalesced last_seen writes must land well inside the offline window, or the sweeper would
    // mark a host offline that pings on time.
    this.lastSeenWriteMs = Math.min(LAST_SEEN_WRITE_MS, this.offlineAfterMs / 3);
    this.lastSeen = new LastSeenWriter(
      this.db,
      this.now,
      (error, count) =>
        this.logger.error({ err: error, hosts: count }, 'writing last_seen_at failed'),
      Math.min(LAST_SEEN_BATCH_MS, this.lastSeenWriteMs / 4),
    );
    this.wss = new WebSocketServer(WSS_OPTIONS);
    this.wss.on('connection', (ws, request: IncomingMessage) => this.accept(ws, request));
    this.metrics = deps.metrics ?? NO_GATEWAY_METRICS;
    this.frameLimits = deps.frameLimits ?? DEFAULT_FRAME_LIMITS;
    this.helloGuard = new HelloGuard(
      new FailedHelloLimiter(deps.failedHelloLimits ?? DEFAULT_FAILED_HELLO_LIMITS),
    );
    this.trustProxy = deps.trustProxy ?? false;
    this.tokenUses = new TokenUseCounter(this.db, (error) =>
      this.logger.error({ err: error }, 'counting enrollment token uses failed'),
    );
    this.ingestGate = new Gate(
      Math.max(1, deps.maxConcurrentIngests ?? DEFAULT_MAX_CONCURRENT_INGESTS),
    );
    this.largeIngestGate = new Gate(1);
  }

  /** Number of authenticated agent connections. */
  get connectedAgents(): number {
    return this.byAgent.size;
  }

  /**
   * Answers every upgrade request on `server`: the agents' path is handed to the WebSocket
   * handshake, any other gets 404 (nothing else on this port speaks WebSocket: next-handler.ts
   * keeps Next.js from listening for upgrades), and a target that is not a URL 400 (upgrade.ts).
   */
  attach(server: Server, path = '/api/agent'): void {
    const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const url = requestUrl(request);
      if (url === null) {
        answerUpgrade(socket, 400, 'the request target is not a valid URL');
        return;
      }
      if (url.pathname !== path) {
        answerUpgrade(socket, 404, `no WebSocket endpoint here; agents connect to ${path}`);
        return;
      }
      // ws answers a malformed handshake (400) itself and destroys the socket.
      this.wss.handleUpgrade(request, socket, head, (ws) =>
        this.wss.emit('connection', ws, request),
      );
    };
    server.on('upgrade', onUpgrade);
    this.detachers.push(() => server.off('upgrade', onUpgrade));
  }

  start(): void {
    if (this.sweeper !== null) return;
    this.unregister = registerDisconnect(this.db, (agentId, reason) =>
      this.disconnect(agentId, reason),
    );
    const every = Math.max(250, Math.min(this.offlineAfterMs / 3, 10_000));
    this.sweeper = setInterval(() => {
      this.sweep().catch((error: unknown) =>
        this.logger.error({ err: error }, 'offline sweep failed'),
      );
    }, every);
    this.sweeper.unref();
  }

  async stop(): Promise<void> {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    this.unregister?.();
    this.unregister = null;
    for (const detach of this.detachers.splice(0)) detach();
    const closing = [...this.sessions].map((session) => {
      session.ws.close(CLOSE_GOING_AWAY, 'server shutting down');
      return session.queue;
    });
    await Promise.allSettled(closing);
    const hostIds = [...this.byAgent.values()].flatMap((s) =>
      s.hostId === null ? [] : [s.hostId],
    );
    this.lastSeen.stop();
    if (hostIds.length > 0) await this.markOffline(hostIds).catch(() => undefined);
    await this.tokenUses.flush().catch(() => undefined);
    for (const session of this.sessions) {
      if (session.throttle !== null) clearTimeout(session.throttle);
      session.ws.terminate();
    }
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  /** Closes an agent's connection now (its credential was revoked). */
  disconnect(agentId: string, reason: string): void {
    const session = this.byAgent.get(agentId);
    if (session === undefined) return;
    this.send(session, { type: 'error', code: 'auth-failed', message: reason, fatal: true });
    session.ws.close(CLOSE_POLICY, 'credential revoked');
  }

  /** Marks hosts offline whose agent has not been heard from within the window. */
  async sweep(): Promise<void> {
    const now = this.now().getTime();
    const cutoff = new Date(now - this.offlineAfterMs);
    // A connection whose frames wait for the ingest gate has been heard from even though its
    // last_seen_at is not written yet: under a snapshot storm that wait can outlast the window
    // (and a connection paused for its queue sends no new frames meanwhile).
    const heard = [...this.byAgent.values()].flatMap((s) =>
      s.hostId !== null && (s.pending > 0 || now - s.lastFrameAt < this.offlineAfterMs)
        ? [s.hostId]
        : [],
    );
    const stale = await this.db
      .update(hosts)
      .set({ state: 'offline' })
      .where(
        and(
          eq(hosts.state, 'online'),
          lt(hosts.lastSeenAt, cutoff),
          heard.length === 0
            ? undefined
            : sql`${hosts.id} <> ALL(${textArrayLiteral(heard)}::uuid[])`,
        ),
      )
      .returning({ id: hosts.id, agentId: hosts.agentId });
    for (const host of stale) {
      this.logger.info({ agentId: host.agentId }, 'host offline: missed heartbeats');
      // The protocol says the server closes a connection it has heard nothing on for 3 heartbeats.
      this.byAgent.get(host.agentId)?.ws.terminate();
    }
  }

  private accept(ws: WebSocket, request: IncomingMessage): void {
    const session: Session = {
      ws,
      agentId: null,
      hostId: null,
      labels: {},
      badFrames: 0,
      lastSeenWrittenAt: 0,
      lastFrameAt: Date.now(),
      queue: Promise.resolve(),
      pending: 0,
      address: remoteAddress(request, this.trustProxy),
      bucket: new FrameBucket(this.frameLimits),
      throttle: null,
      handling: 'invalid',
      connectedAt: null,
      rawHash: null,
      rawHashStored: false,
    };
    this.sessions.add(session);
    const helloTimer = setTimeout(() => {
      // Only silence is a violation: a hello still being handled (a slow or unreachable database)
      // ends in welcome or an error of its own, and cutting it off here as `protocol-violation`,
      // which is fatal, would stop an agent for good over a database outage.
      if (session.agentId === null && session.pending === 0) {
        this.fatal(session, 'protocol-violation', 'no hello in time');
      }
    }, this.helloTimeoutMs);
    ws.on('error', (error) => this.logger.debug({ err: error }, 'agent socket error'));
    ws.on('message', (data, isBinary) => {
      session.lastFrameAt = this.now().getTime();
      session.pending += 1;
      if (session.pending >= MAX_PENDING_FRAMES) ws.pause();
      // Every frame received is handled; one over the rate only stops further reading a while.
      this.limitRate(session);
      session.queue = session.queue
        .then(() => this.onFrame(session, data, isBinary))
        .catch((error: unknown) => this.onHandlerError(session, error))
        .finally(() => {
          session.pending -= 1;
          this.resumeIfAllowed(session);
        });
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (session.throttle !== null) clearTimeout(session.throttle);
      session.throttle = null;
      this.sessions.delete(session);
      session.queue = session.queue.then(() => this.onClose(session));
    });
  }

  /**
   * Counts a frame against the connection's bucket: pauses reading, or closes the connection once
   * it has been over its rate for maxThrottledMs (checked when a pause ends, so the close is on
   * time). Logged once per throttled stretch, not per frame.
   */
  private limitRate(session: Session): void {
    // A connection being closed is past limiting: the frames it still delivers change nothing.
    if (session.ws.readyState !== session.ws.OPEN) return;
    const verdict = session.bucket.take();
    if (verdict.kind === 'ok' || session.throttle !== null) return;
    if (verdict.kind === 'close') {
      this.closeThrottled(session, verdict.throttledForMs);
      return;
    }
    if (verdict.started) {
      this.metrics.rateLimited('frames');
      this.logger.warn(
        { agentId: session.agentId, address: session.address },
        'agent connection over its frame rate: reading paused',
      );
    }
    session.ws.pause();
    session.throttle = setTimeout(() => {
      session.throttle = null;
      const overdue = session.bucket.overdue();
      if (overdue !== null) this.closeThrottled(session, overdue);
      else this.resumeIfAllowed(session);
    }, verdict.pauseMs);
  }

  private closeThrottled(session: Session, throttledForMs: number): void {
    if (session.ws.readyState !== session.ws.OPEN) return;
    this.metrics.rateLimited('frames');
    this.logger.warn(
      { agentId: session.agentId, address: session.address, ms: Math.round(throttledForMs) },
      'agent connection closed: over its frame rate for too long',
    );
    this.fatal(
      session,
      'rate-limited',
      `more than ${this.frameLimits.perSecond} frames a second for over ${Math.round(this.frameLimits.maxThrottledMs / 1000)} s`,
    );
  }

  /** Reading resumes only when neither the frame rate nor the queue of pending frames holds it. */
  private resumeIfAllowed(session: Session): void {
    const { ws } = session;
    if (session.throttle === null && session.pending < MAX_PENDING_FRAMES && ws.isPaused) {
      ws.resume();
    }
  }

  private async onFrame(session: Session, data: RawData, isBinary: boolean): Promise<void> {
    if (session.ws.readyState !== session.ws.OPEN) return;
    const raw = toBytes(data);
    if (raw.byteLength <= GATED_FRAME_BYTES) {
      await this.handleFrame(session, parseAgentMessageForServer(raw), isBinary);
      return;
    }
    // A resend of the stored snapshot is recognised from its bytes, before the gate: it parses
    // nothing, so it holds no parsed inventory and need not wait behind the snapshots that do.
    const view =
      !isBinary && session.hostId !== null ? rawSnapshotFrame(raw, session.labels) : null;
    if (
      view !== null &&
      session.hostId !== null &&
      (await this.resendUnchanged(session, session.hostId, view))
    ) {
      return;
    }
    const releaseLarge =
      raw.byteLength > LARGE_FRAME_BYTES ? await this.largeIngestGate.acquire() : null;
    const release = await this.ingestGate.acquire();
    try {
      // It may have closed while waiting: nothing to store for a connection that is gone.
      if (session.ws.readyState !== session.ws.OPEN) return;
      session.rawHash = view?.hash ?? null;
      const parsed = await finishYielding(parseAgentFrameInSlices(raw));
      await this.handleFrame(session, parsed, isBinary);
    } finally {
      session.rawHash = null;
      release();
      releaseLarge?.();
    }
  }

  /**
   * A snapshot frame whose raw hash is the one stored with the host's inventory (raw-snapshot.ts):
   * the stream position moves and the agent gets its ack, without parsing, validating, assessing
   * or storing the ~300 KB again. False when it is not (or the host may hold no raw hash): the
   * caller then takes the full path, which validates the frame and reports what is wrong.
   */
  private async resendUnchanged(
    session: Session,
    hostId: string,
    view: RawSnapshotFrame,
  ): Promise<boolean> {
    if (!session.rawHashStored) return false;
    this.touch(session, hostId);
    const started = performance.now();
    const stream = { epoch: view.epoch, seq: view.seq };
    if (!(await ingestUnchangedSnapshot(this.db, hostId, stream, view.hash))) return false;
    this.metrics.ingest('snapshot', (performance.now() - started) / 1000, 0);
    this.metrics.message('snapshot', 'unchanged');
    this.send(session, { type: 'ack', ...stream });
    this.logger.debug(
      { agentId: session.agentId, seq: stream.seq },
      'unchanged snapshot acknowledged',
    );
    return true;
  }

  private async handleFrame(
    session: Session,
    parsed: ParsedMessage<AgentMessageForServer>,
    isBinary: boolean,
  ): Promise<void> {
    if (!parsed.ok) {
      this.metrics.message('invalid', 'rejected');
      session.badFrames += 1;
      this.logger.warn(
        { agentId: session.agentId, code: parsed.error.code, binary: isBinary },
        'rejected agent frame',
      );
      if (session.agentId === null || session.badFrames >= this.maxBadFrames) {
        this.fatal(
          session,
          'invalid-message',
          session.agentId === null
            ? `the first message must be a valid hello: ${parsed.error.message}`
            : `too many invalid messages (${session.badFrames}); last: ${parsed.error.message}`,
        );
        return;
      }
      this.send(session, {
        type: 'error',
        code: 'invalid-message',
        message: `${parsed.error.code}: ${parsed.error.message}`,
        fatal: false,
      });
      return;
    }
    const message = parsed.message;
    session.handling = message.type;
    if (session.agentId === null || session.hostId === null) {
      if (message.type !== 'hello') {
        this.metrics.message(message.type, 'rejected');
        this.fatal(
          session,
          'protocol-violation',
          `the first message must be hello, not ${message.type}`,
        );
        return;
      }
      await this.onHello(session, message);
      return;
    }
    await this.onMessage(session, session.hostId, message);
  }

  private async onHello(session: Session, hello: HelloMessage): Promise<void> {
    if (hello.protocolVersion !== PROTOCOL_VERSION) {
      this.metrics.message('hello', 'rejected');
      this.fatal(
        session,
        'unsupported-protocol',
        `this server speaks protocol ${PROTOCOL_VERSION}, not ${hello.protocolVersion}`,
      );
      return;
    }
    const admission = this.helloGuard.admit(session.address, hello.auth);
    if (admission === null) {
      this.refuseHello(session);
      return;
    }
    try {
      await this.authenticate(session, hello, admission);
    } finally {
      if (admission.done()) {
        this.logger.warn(
          {
            address: session.address,
            retryAfterSeconds: this.helloGuard.retryAfterSeconds(session.address),
          },
          'too many failed agent hellos from this address: hellos of agents not seen yet are refused for now',
        );
      }
    }
  }

  /** Verifies a hello's token or credential and welcomes the agent, or closes with auth-failed. */
  private async authenticate(
    session: Session,
    hello: HelloMessage,
    admission: HelloAdmission,
  ): Promise<void> {
    const now = this.now();
    const verdict = await verifyHello(this.db, hello, now);
    if (!verdict.ok) {
      this.authFailed(admission);
      this.fatal(session, 'auth-failed', verdict.message);
      return;
    }
    const { agentId, hostId, credential, stream } = verdict;
    // Its next hellos need not wait behind strangers' failures at its address.
    this.helloGuard.remember(agentId, verdict.secretHash);
    if (verdict.uncountedTokenUse !== null) this.tokenUses.record(verdict.uncountedTokenUse);
    if (credential !== null) {
      this.logger.info({ agentId, hostname: hello.host.hostname }, 'agent enrolled');
    }

    // One connection per agent: a second login (a restarted agent whose old socket has not timed
    // out yet) replaces the first.
    const previous = this.byAgent.get(agentId);
    if (previous !== undefined && previous !== session) {
      previous.hostId = null;
      previous.ws.close(CLOSE_POLICY, 'replaced by a newer connection');
    }
    session.agentId = agentId;
    session.hostId = hostId;
    session.labels = hello.labels;
    session.rawHashStored = stream.rawHashStored;
    session.lastSeenWrittenAt = now.getTime();
    session.connectedAt = now;
    this.byAgent.set(agentId, session);
    const resumable =
      hello.resume !== null &&
      stream.epoch === hello.resume.epoch &&
      stream.lastSeq === hello.resume.lastAckedSeq;
    this.send(session, {
      type: 'welcome',
      protocolVersion: PROTOCOL_VERSION,
      agentId,
      credential,
      resume: resumable ? 'ok' : 'snapshot',
      heartbeatSeconds: this.heartbeatSeconds,
    });
    this.metrics.message('hello', 'ok');
    this.logger.info({ agentId, resume: resumable ? 'ok' : 'snapshot' }, 'agent connected');
    if (this.dispatcher !== null) {
      // After welcome, so the agent's first job comes after its session is established.
      const send = (message: ServerMessage) => this.send(session, message);
      this.jobSenders.set(session, send);
      this.dispatcher.agentConnected(hostId, send, { newHost: credential !== null });
    }
  }

  private authFailed(admission: HelloAdmission): void {
    this.metrics.message('hello', 'auth-failed');
    this.metrics.authFailure();
    admission.failed();
  }

  /** Past its address's failures, a hello of an agent not seen yet is refused unverified. */
  private refuseHello(session: Session): void {
    const retryAfterSeconds = this.helloGuard.retryAfterSeconds(session.address);
    this.metrics.rateLimited('failed-hellos');
    this.metrics.message('hello', 'rejected');
    // Not fatal: the agent redials with its backoff, and gets in once the window has room.
    this.send(session, {
      type: 'error',
      code: 'rate-limited',
      message: `too many failed hellos from this address; retry in ${retryAfterSeconds} s`,
      fatal: false,
    });
    session.ws.close(CLOSE_TRY_AGAIN_LATER, 'rate-limited');
  }

  private async onMessage(
    session: Session,
    hostId: string,
    message: AgentMessageForServer,
  ): Promise<void> {
    this.touch(session, hostId);
    switch (message.type) {
      case 'hello':
        this.metrics.message('hello', 'rejected');
        this.send(session, {
          type: 'error',
          code: 'protocol-violation',
          message: 'hello was already received on this connection',
          fatal: false,
        });
        return;
      case 'snapshot': {
        const started = performance.now();
        const rawHash = session.rawHash;
        session.rawHash = null;
        const result = await ingestSnapshot(this.db, hostId, message, session.labels, rawHash);
        session.rawHashStored = rawHash !== null;
        this.metrics.ingest(
          'snapshot',
          (performance.now() - started) / 1000,
          result.devicesWritten,
        );
        this.metrics.message('snapshot', 'ok');
        this.send(session, { type: 'ack', epoch: message.epoch, seq: message.seq });
        this.logger.debug(
          {
            agentId: session.agentId,
            seq: message.seq,
            ...result,
            ms: performance.now() - started,
          },
          'snapshot stored',
        );
        return;
      }
      case 'delta': {
        const started = performance.now();
        const outcome = await ingestDelta(this.db, hostId, message);
        if (!outcome.applied) {
          this.metrics.message('delta', 'resync');
          this.logger.info({ agentId: session.agentId, reason: outcome.reason }, 'resync');
          this.send(session, { type: 'resync', reason: outcome.reason });
          return;
        }
        this.metrics.ingest(
          'delta',
          (performance.now() - started) / 1000,
          outcome.result.devicesWritten,
        );
        session.rawHashStored = false;
        this.metrics.message('delta', 'ok');
        this.send(session, { type: 'ack', epoch: message.epoch, seq: message.seq });
        this.logger.debug(
          { agentId: session.agentId, seq: message.seq, ...outcome.result },
          'delta stored',
        );
        return;
      }
      case 'ping':
        this.metrics.message('ping', 'ok');
        this.send(session, { type: 'pong', nonce: message.nonce });
        return;
      case 'pong':
        this.metrics.message('pong', 'ok');
        return;
      case 'job-accepted':
      case 'job-step':
      case 'job-result': {
        if (this.dispatcher === null) {
          this.logger.info(
            { agentId: session.agentId, type: message.type, jobId: message.jobId },
            'job message ignored (no dispatcher)',
          );
          return;
        }
        // The host is the credential's: a message about another host's job changes nothing.
        const outcome = await this.dispatcher.handleAgentMessage(hostId, message);
        this.metrics.message(message.type, outcome.ok ? 'ok' : 'rejected');
        if (!outcome.ok) {
          // Not fatal: a replayed result is what an honest agent may send after a reconnect.
          this.send(session, {
            type: 'error',
            code: 'protocol-violation',
            message: outcome.message,
            fatal: false,
          });
        }
        return;
      }
    }
  }

  /**
   * Records that the host was heard from, at most once per lastSeenWriteMs, through the batched
   * writer, which also reads whether the credential was revoked meanwhile: a revocation made
   * through another server process (which cannot reach this socket) closes the connection within
   * that period and the writer's batching delay.
   */
  private touch(session: Session, hostId: string): void {
    const now = this.now().getTime();
    if (now - session.lastSeenWrittenAt < this.lastSeenWriteMs) return;
    session.lastSeenWrittenAt = now;
    this.lastSeen.mark(hostId, {
      revoked: () => this.fatal(session, 'auth-failed', 'the credential was revoked'),
      failed: () => {
        session.lastSeenWrittenAt = 0;
      },
    });
  }

  private async onClose(session: Session): Promise<void> {
    const { agentId, hostId } = session;
    if (agentId === null) return;
    if (this.byAgent.get(agentId) === session) this.byAgent.delete(agentId);
    // A connection replaced by a newer one has hostId null: the host is still online there.
    if (hostId === null || this.byAgent.has(agentId)) return;
    this.dispatcher?.agentDisconnected(hostId, this.jobSenders.get(session));
    await this.markOffline([hostId], session.connectedAt).catch((error: unknown) =>
      this.logger.error({ err: error, agentId }, 'marking the host offline failed'),
    );
    this.logger.info({ agentId }, 'agent disconnected');
  }

  /**
   * With `connectedAt` (a closed connection's own hello time), only while no newer connection
   * has logged in since: the write of a connection that closed during a database outage can land
   * after its agent's reconnect (here or on another server process) and must not turn that host
   * offline.
   */
  private async markOffline(hostIds: string[], connectedAt: Date | null = null): Promise<void> {
    await this.db
      .update(hosts)
      .set({ state: 'offline', lastSeenAt: sql`coalesce(${hosts.lastSeenAt}, now())` })
      .where(
        and(
          inArray(hosts.id, hostIds),
          eq(hosts.state, 'online'),
          connectedAt === null ? undefined : lte(hosts.connectedAt, connectedAt),
        ),
      );
  }

  private onHandlerError(session: Session, error: unknown): void {
    this.metrics.message(session.handling, 'error');
    if (error instanceof ServerError) {
      this.fatal(session, error.code, error.message);
      return;
    }
    // A database failure or a bug: the agent gets no details, and re-sends after reconnecting
    // (nothing unacknowledged is lost, since the ack only follows a committed write). Not fatal:
    // an agent stops for good after a fatal error, and a database that is back in a minute must
    // not leave the fleet's agents stopped; the close makes it redial with its backoff instead.
    this.logger.error({ err: error, agentId: session.agentId }, 'handling an agent message failed');
    this.send(session, {
      type: 'error',
      code: 'internal',
      message: 'the server could not handle the message; reconnect and resend',
      fatal: false,
    });
    session.ws.close(CLOSE_INTERNAL_ERROR, 'internal');
  }

  private fatal(session: Session, code: string, message: string): void {
    this.send(session, { type: 'error', code, message, fatal: true });
    session.ws.close(CLOSE_POLICY, code);
  }

  private send(session: Session, message: ServerMessage): void {
    if (session.ws.readyState === session.ws.OPEN) session.ws.send(encodeMessage(message));
  }
}

/** A frame as bytes: ws hands a Buffer, or fragments (Buffer[]), or an ArrayBuffer. */
function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}
