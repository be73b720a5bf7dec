// A minimal vfio-fleet server for the daemon tests: the server side of the agent protocol with
// core's schemas (enrollment issuing a credential, credential check, acks, resync when it cannot
// apply a delta, job dispatch), recording everything it receives. Its state lives apart from the
// socket so a test can restart the server with the same memory (resume) or a blank one (resync).
// Also the helper that runs the agent bundle as a long-lived child process.
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import {
  type AgentMessage,
  applyDelta,
  encodeMessage,
  type HostSnapshot,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  parseAgentMessage,
  type ServerMessage,
} from '@vfio-fleet/core';
import { type WebSocket, WebSocketServer } from 'ws';

/** What survives a server restart: enrolled agents and (unless forgotten) their streams. */
export class ServerState {
  readonly tokens = new Set<string>();
  readonly credentials = new Map<string, string>();
  /** Per agent: the epoch it streams and the snapshot state at each seq applied. */
  readonly streams = new Map<string, { epoch: string; states: Map<number, HostSnapshot> }>();

  issueToken(): string {
    const token = randomBytes(24).toString('hex');
    this.tokens.add(token);
    return token;
  }

  /** The newest state the server holds for an agent. */
  latest(agentId: string): HostSnapshot | null {
    const stream = this.streams.get(agentId);
    if (stream === undefined) return null;
    const seq = Math.max(...stream.states.keys());
    return stream.states.get(seq) ?? null;
  }
}

export interface Received {
  at: number;
  /** Which connection (1-based, in order of arrival) it came on. */
  connection: number;
  message: AgentMessage;
}

export interface TestServerOptions {
  port?: number;
  state?: ServerState;
  heartbeatSeconds?: number;
  /** false: leave the agent's pings unanswered (a server that hangs). */
  answerPings?: boolean;
}

export class TestServer {
  readonly received: Received[] = [];
  /** Frames that did not parse, with the parser's error. */
  readonly rejected: string[] = [];
  /** Close codes of agent connections, in order. */
  readonly closes: number[] = [];
  private connections = 0;
  private readonly sockets = new Set<WebSocket>();
  private constructor(
    private readonly wss: WebSocketServer,
    readonly state: ServerState,
    readonly port: number,
    private readonly heartbeatSeconds: number,
    private readonly answerPings: boolean,
  ) {}

  static async start(options: TestServerOptions = {}): Promise<TestServer> {
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: options.port ?? 0,
      path: '/api/agent',
      maxPayload: MAX_SNAPSHOT_MESSAGE_BYTES,
    });
    await new Promise<void>((resolve, reject) => {
      wss.once('listening', resolve);
      wss.once('error', reject);
    });
    const port = (wss.address() as AddressInfo).port;
    const server = new TestServer(
      wss,
      options.state ?? new ServerState(),
      port,
      options.heartbeatSeconds ?? 30,
      options.answerPings ?? true,
    );
    wss.on('connection', (ws) => server.accept(ws));
    return server;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Messages of one type, in arrival order. */
  messages<T extends AgentMessage['type']>(type: T): Extract<AgentMessage, { type: T }>[] {
    return this.received
      .map((r) => r.message)
      .filter((m): m is Extract<AgentMessage, { type: T }> => m.type === type);
  }

  /** Resolves with the first message of `type` (after `from`, an index into `received`) matching. */
  async waitFor<T extends AgentMessage['type']>(
    type: T,
    options: {
      from?: number;
      timeoutMs?: number;
      match?: (m: Extract<AgentMessage, { type: T }>) => boolean;
    } = {},
  ): Promise<Extract<AgentMessage, { type: T }>> {
    const found = await poll(() => {
      for (const r of this.received.slice(options.from ?? 0)) {
        const m = r.message;
        if (m.type === type) {
          const typed = m as Extract<AgentMessage, { type: T }>;
          if (options.match === undefined || options.match(typed)) return typed;
        }
      }
      return undefined;
    }, options.timeoutMs ?? 10_000);
    if (found === undefined) throw new Error(`no ${type} message within the timeout`);
    return found;
  }

  /** Sends a raw frame (valid or not) to every connected agent. */
  sendRaw(data: string | Buffer): void {
    for (const ws of this.sockets) ws.send(data);
  }

  send(message: ServerMessage): void {
    this.sendRaw(encodeMessage(message));
  }

  get connectedAgents(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private accept(ws: WebSocket): void {
    this.connections += 1;
    const connection = this.connections;
    let agentId: string | null = null;
    ws.on('close', (code) => {
      this.sockets.delete(ws);
      this.closes.push(code);
    });
    ws.on('error', () => undefined);
    ws.on('message', (data, isBinary) => {
      const raw = isBinary ? '' : Buffer.isBuffer(data) ? data : Buffer.from(String(data));
      const parsed = parseAgentMessage(raw);
      if (!parsed.ok) {
        this.rejected.push(parsed.error.message);
        return;
      }
      const message = parsed.message;
      this.received.push({ at: Date.now(), connection, message });
      const reply = (m: ServerMessage): void => ws.send(encodeMessage(m));
      if (agentId === null) {
        if (message.type !== 'hello') {
          reply({
            type: 'error',
            code: 'protocol-violation',
            message: 'send hello first',
            fatal: true,
          });
          ws.close(1008);
          return;
        }
        agentId = this.authenticate(message, reply);
        if (agentId === null) ws.close(1008);
        else this.sockets.add(ws);
        return;
      }
      this.handle(agentId, message, reply);
    });
  }

  private authenticate(
    hello: Extract<AgentMessage, { type: 'hello' }>,
    reply: (m: ServerMessage) => void,
  ): string | null {
    let agentId: string;
    let credential: { agentId: string; secret: string } | null = null;
    if (hello.auth.kind === 'enroll') {
      if (!this.state.tokens.delete(hello.auth.token)) {
        reply({
          type: 'error',
          code: 'auth-failed',
          message: 'unknown or used enrollment token',
          fatal: true,
        });
        return null;
      }
      agentId = randomUUID();
      credential = { agentId, secret: randomBytes(32).toString('base64url') };
      this.state.credentials.set(agentId, credential.secret);
    } else {
      if (this.state.credentials.get(hello.auth.agentId) !== hello.auth.secret) {
        reply({ type: 'error', code: 'auth-failed', message: 'credential rejected', fatal: true });
        return null;
      }
      agentId = hello.auth.agentId;
    }
    const stream = this.state.streams.get(agentId);
    const resumable =
      hello.resume !== null &&
      stream !== undefined &&
      stream.epoch === hello.resume.epoch &&
      stream.states.has(hello.resume.lastAckedSeq);
    reply({
      type: 'welcome',
      protocolVersion: PROTOCOL_VERSION,
      agentId,
      credential,
      resume: resumable ? 'ok' : 'snapshot',
      heartbeatSeconds: this.heartbeatSeconds,
    });
    return agentId;
  }

  private handle(agentId: string, message: AgentMessage, reply: (m: ServerMessage) => void): void {
    switch (message.type) {
      case 'snapshot': {
        const states = new Map([[message.seq, message.snapshot]]);
        this.state.streams.set(agentId, { epoch: message.epoch, states });
        reply({ type: 'ack', epoch: message.epoch, seq: message.seq });
        return;
      }
      case 'delta': {
        const stream = this.state.streams.get(agentId);
        const base =
          stream?.epoch === message.epoch ? stream.states.get(message.baseSeq) : undefined;
        if (stream === undefined || base === undefined) {
          reply({ type: 'resync', reason: `no state for seq ${message.baseSeq} of this epoch` });
          return;
        }
        try {
          stream.states.set(message.seq, applyDelta(base, message.delta, new Date().toISOString()));
        } catch (error) {
          reply({ type: 'resync', reason: error instanceof Error ? error.message : 'misfit' });
          return;
        }
        reply({ type: 'ack', epoch: message.epoch, seq: message.seq });
        return;
      }
      case 'ping':
        if (this.answerPings) reply({ type: 'pong', nonce: message.nonce });
        return;
      default:
        // job-accepted, job-step, job-result, pong: recorded above, nothing to answer.
        return;
    }
  }
}

/** Polls `check` until it returns something other than undefined, or the timeout passes. */
export async function poll<T>(
  check: () => T | undefined,
  timeoutMs: number,
): Promise<T | undefined> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() >= end) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// --- the agent as a child process ---------------------------------------------------------------

const agentDir = path.resolve(import.meta.dirname, '../..');
const bin = path.join(agentDir, 'bin/vfio-fleet-agent.mjs');

export interface AgentProcess {
  child: ChildProcess;
  /** stderr so far (pino JSON lines and messages). */
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once the process ends. */
  exited: Promise<number | string>;
  /** Sends a signal and resolves with the exit code, failing after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | string>;
}

export function startAgent(
  args: readonly string[],
  env: Record<string, string> = {},
): AgentProcess {
  const child = spawn(process.execPath, [bin, 'run', ...args], {
    cwd: agentDir,
    env: { ...process.env, NO_COLOR: '1', VFIO_FLEET_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  child.stdout?.resume();
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return {
    child,
    stderr: () => stderr,
    exited,
    async stop(signal = 'SIGTERM', timeoutMs = 5_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`agent did not exit within ${timeoutMs} ms of ${signal}\n${stderr}`));
        }, timeoutMs);
      });
      try {
        return await Promise.race([exited, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
