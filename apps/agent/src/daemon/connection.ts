/**
 * The agent's one WebSocket to the server: dial, hello/welcome, heartbeats, reconnect with
 * backoff, and a bound on both directions. Everything above it (inventory, jobs) sees only
 * "connected with this welcome", "a parsed server message" and "disconnected".
 *
 * The agent always dials out: hosts sit behind NAT and firewalls that allow outbound HTTPS only,
 * and the server never needs a route to them.
 */
import { randomBytes } from 'node:crypto';
import {
  type AgentMessage,
  type ErrorMessage,
  encodeMessage,
  type HelloMessage,
  MAX_CONTROL_MESSAGE_BYTES,
  parseServerMessage,
  type ServerMessage,
  type WelcomeMessage,
} from '@vfio-fleet/core';
import WebSocket from 'ws';
import type { Logger } from '../logger';
import { Backoff, DEFAULT_BACKOFF, startupSplayMs } from './backoff';
import type { Clock, Random, TimerHandle } from './clock';

/**
 * Frames larger than this are refused by ws itself (close 1009, then a reconnect) before they are
 * buffered whole. Every server message is a control message (at most MAX_CONTROL_MESSAGE_BYTES);
 * the headroom lets parseServerMessage reject a moderately oversized frame without dropping the
 * session, while memory stays bounded whatever the server sends.
 */
export const DEFAULT_MAX_PAYLOAD = 16 * MAX_CONTROL_MESSAGE_BYTES;
/** Above this many unsent bytes, snapshots and deltas wait (and coalesce) instead of queueing. */
export const DEFAULT_SEND_BUFFER_LIMIT = 1024 * 1024;
/** Pings the server may leave unanswered before the connection is considered dead. */
export const MAX_MISSED_PONGS = 3;
/** A server that accepts the socket but never welcomes us is as good as down. */
const WELCOME_TIMEOUT_MS = 15_000;
/** After close(1000), how long to wait for the server's close frame before dropping the socket. */
const CLOSE_TIMEOUT_MS = 2_000;

export interface ConnectionHandlers {
  /** Builds the hello for each dial: the credential and the resume point change between dials. */
  hello(): Promise<HelloMessage> | HelloMessage;
  /** The server welcomed us; messages may be sent from now on. */
  welcomed(welcome: WelcomeMessage): Promise<void> | void;
  /** Any other valid server message, after welcome. */
  message(message: ServerMessage): void;
  /** The session ended (it will be redialled unless stopped). */
  disconnected(): void;
  /**
   * The server sent a fatal error and closes the connection; it is not redialled, since retrying
   * unchanged cannot help (a revoked credential, a protocol the server does not speak).
   */
  fatal(error: ErrorMessage): void;
}

export interface ConnectionOptions {
  url: URL;
  logger: Logger;
  clock: Clock;
  random: Random;
  /** The scan interval bounds the start-up splay. */
  intervalMs: number;
  maxPayload?: number;
  sendBufferLimit?: number;
  backoff?: { baseMs: number; capMs: number };
  /** Skip the start-up splay (a restart after a fatal error, tests that drive the clock). */
  splay?: boolean;
}

interface Session {
  ws: WebSocket;
  welcomed: boolean;
  heartbeat: TimerHandle | null;
  welcomeTimer: TimerHandle | null;
  /** Nonces of pings sent and not yet answered. */
  pendingPings: Set<string>;
  /** Frames that failed to parse on this session. */
  malformed: number;
}

export class Connection {
  private readonly backoff: Backoff;
  private session: Session | null = null;
  private dialTimer: TimerHandle | null = null;
  private stopping = false;
  private halted = false;
  private readonly maxPayload: number;
  private readonly sendBufferLimit: number;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly handlers: ConnectionHandlers,
  ) {
    this.backoff = new Backoff({ ...(options.backoff ?? DEFAULT_BACKOFF), random: options.random });
    this.maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.sendBufferLimit = options.sendBufferLimit ?? DEFAULT_SEND_BUFFER_LIMIT;
  }

  start(): void {
    const delay =
      this.options.splay === false
        ? 0
        : startupSplayMs(this.options.intervalMs, this.options.random);
    this.options.logger.info({ url: this.options.url.href, splayMs: delay }, 'connecting');
    this.scheduleDial(delay);
  }

  /** Closes with 1000 (normal closure) and waits briefly for the server to confirm. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.dialTimer !== null) this.options.clock.clearTimeout(this.dialTimer);
    this.dialTimer = null;
    const session = this.session;
    if (session === null) return;
    this.endSessionTimers(session);
    const ws = session.ws;
    if (ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      const timer = this.options.clock.setTimeout(() => {
        ws.terminate();
        resolve();
      }, CLOSE_TIMEOUT_MS);
      ws.once('close', () => {
        this.options.clock.clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000, 'agent stopping');
    });
  }

  get connected(): boolean {
    return this.live() !== null;
  }

  /** Whether a bulky message (snapshot, delta) may go now; false means: try again later. */
  canSendBulk(): boolean {
    const session = this.live();
    return session !== null && session.ws.bufferedAmount <= this.sendBufferLimit;
  }

  /** Sends on the welcomed session; false when there is none (the caller keeps what it must resend). */
  send(message: AgentMessage): boolean {
    const session = this.live();
    if (session === null) return false;
    this.sendOn(session, message);
    return true;
  }

  /**
   * Sends on the welcomed session and resolves true once the frame is written to the socket
   * (not proof the server processed it), false when there is no session or the write failed.
   */
  sendConfirmed(message: AgentMessage): Promise<boolean> {
    const session = this.live();
    if (session === null) return Promise.resolve(false);
    return new Promise((resolve) => {
      session.ws.send(encodeMessage(message), (error) => resolve(error == null));
    });
  }

  /** The session messages may go on: welcomed and open. */
  private live(): Session | null {
    const session = this.session;
    if (session === null || !session.welcomed) return null;
    return session.ws.readyState === WebSocket.OPEN ? session : null;
  }

  private sendOn(session: Session, message: AgentMessage): void {
    session.ws.send(encodeMessage(message), (error) => {
      // The socket's own error/close handlers reconnect; here it is only worth a line.
      if (error) this.options.logger.debug({ err: error, type: message.type }, 'send failed');
    });
  }

  private scheduleDial(delayMs: number): void {
    if (this.stopping || this.halted) return;
    this.dialTimer = this.options.clock.setTimeout(() => {
      this.dialTimer = null;
      void this.dial();
    }, delayMs);
  }

  private async dial(): Promise<void> {
    if (this.stopping || this.halted) return;
    let hello: HelloMessage;
    try {
      hello = await this.handlers.hello();
    } catch (error) {
      this.options.logger.error({ err: error }, 'cannot prepare hello; retrying');
      this.scheduleDial(this.backoff.next());
      return;
    }
    if (this.stopping || this.halted) return;
    const { logger } = this.options;
    const ws = new WebSocket(this.options.url, {
      maxPayload: this.maxPayload,
      handshakeTimeout: WELCOME_TIMEOUT_MS,
      // Compression of attacker-controlled input is a memory and CPU lever we do not need.
      perMessageDeflate: false,
    });
    const session: Session = {
      ws,
      welcomed: false,
      heartbeat: null,
      welcomeTimer: null,
      pendingPings: new Set(),
      malformed: 0,
    };
    this.session = session;

    ws.on('open', () => {
      logger.debug({ url: this.options.url.href }, 'socket open; sending hello');
      this.sendOn(session, hello);
      session.welcomeTimer = this.options.clock.setTimeout(() => {
        logger.warn({ timeoutMs: WELCOME_TIMEOUT_MS }, 'no welcome from the server; reconnecting');
        ws.terminate();
      }, WELCOME_TIMEOUT_MS);
    });
    ws.on('message', (data, isBinary) => this.receive(session, data, isBinary));
    ws.on('error', (error) => {
      // Always handled: an unhandled 'error' would crash the process. 'close' follows.
      logger.warn({ err: error }, 'connection error');
    });
    ws.on('close', (code, reason) => {
      this.endSessionTimers(session);
      if (this.session === session) this.session = null;
      const wasWelcomed = session.welcomed;
      session.welcomed = false;
      if (wasWelcomed) this.handlers.disconnected();
      if (this.stopping || this.halted) return;
      const delay = this.backoff.next();
      logger.info(
        { code, reason: reason.toString('utf8').slice(0, 200), retryInMs: delay },
        'disconnected; reconnecting',
      );
      this.scheduleDial(delay);
    });
  }

  private receive(session: Session, data: WebSocket.RawData, isBinary: boolean): void {
    const { logger } = this.options;
    if (isBinary) {
      session.malformed += 1;
      if (session.malformed <= 10) {
        logger.warn('binary frame from the server ignored (the protocol is JSON text)');
      }
      return;
    }
    // Bytes straight to the parser: it checks the size before decoding anything.
    const bytes = Array.isArray(data)
      ? Buffer.concat(data)
      : data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : data;
    const parsed = parseServerMessage(bytes);
    if (!parsed.ok) {
      // Never trust the peer: a malformed frame is dropped, the session goes on. Logged sparsely
      // after the first few, so a flood of garbage cannot turn into a flood of log lines.
      session.malformed += 1;
      if (session.malformed <= 10 || session.malformed % 1000 === 0) {
        logger.warn(
          { error: parsed.error, bytes: bytes.byteLength, malformedSoFar: session.malformed },
          'malformed server message ignored',
        );
      }
      return;
    }
    const message = parsed.message;
    try {
      this.dispatch(session, message);
    } catch (error) {
      logger.error({ err: error, type: message.type }, 'handling a server message failed');
    }
  }

  private dispatch(session: Session, message: ServerMessage): void {
    const { logger } = this.options;
    switch (message.type) {
      case 'welcome': {
        if (session.welcomed) {
          logger.warn('second welcome ignored');
          return;
        }
        if (session.welcomeTimer !== null) this.options.clock.clearTimeout(session.welcomeTimer);
        session.welcomeTimer = null;
        session.welcomed = true;
        this.backoff.reset();
        this.startHeartbeat(session, message.heartbeatSeconds);
        logger.info(
          {
            agentId: message.agentId,
            resume: message.resume,
            heartbeatSeconds: message.heartbeatSeconds,
          },
          'connected',
        );
        Promise.resolve(this.handlers.welcomed(message)).catch((error: unknown) => {
          logger.error({ err: error }, 'handling welcome failed; reconnecting');
          session.ws.terminate();
        });
        return;
      }
      case 'error': {
        const log = { code: message.code, message: message.message, fatal: message.fatal };
        if (!message.fatal) {
          logger.warn(log, 'server reported an error');
          return;
        }
        logger.error(log, 'server reported a fatal error; closing for good');
        this.halted = true;
        this.endSessionTimers(session);
        session.ws.close(1000, 'fatal error from server');
        this.handlers.fatal(message);
        return;
      }
      case 'ping':
        if (session.welcomed) this.sendOn(session, { type: 'pong', nonce: message.nonce });
        return;
      case 'pong':
        // Only an answer to a ping we sent counts: a stray pong proves nothing about liveness.
        if (session.pendingPings.delete(message.nonce)) session.pendingPings.clear();
        return;
      default:
        if (!session.welcomed) {
          logger.warn({ type: message.type }, 'message before welcome ignored');
          return;
        }
        this.handlers.message(message);
    }
  }

  private startHeartbeat(session: Session, heartbeatSeconds: number): void {
    const periodMs = Math.max(1, heartbeatSeconds) * 1000;
    const beat = (): void => {
      if (session.pendingPings.size >= MAX_MISSED_PONGS) {
        this.options.logger.warn(
          { missed: session.pendingPings.size },
          'server stopped answering pings; reconnecting',
        );
        session.ws.terminate();
        return;
      }
      const nonce = randomBytes(8).toString('hex');
      session.pendingPings.add(nonce);
      this.sendOn(session, {
        type: 'ping',
        nonce,
        sentAt: new Date(this.options.clock.now()).toISOString(),
      });
      session.heartbeat = this.options.clock.setTimeout(beat, periodMs);
    };
    session.heartbeat = this.options.clock.setTimeout(beat, periodMs);
  }

  private endSessionTimers(session: Session): void {
    if (session.heartbeat !== null) this.options.clock.clearTimeout(session.heartbeat);
    if (session.welcomeTimer !== null) this.options.clock.clearTimeout(session.welcomeTimer);
    session.heartbeat = null;
    session.welcomeTimer = null;
  }
}
