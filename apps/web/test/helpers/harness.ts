// The real server on port 0 over a throwaway database (PGlite in memory always; PostgreSQL too when
// DATABASE_URL is set, one database per test file, as packages/db's tests do), real agents as
// child processes of the agent bundle, and a raw ws client for frames no real agent would send.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { parseServerMessage, type ServerMessage } from '@vfio-fleet/core';
import {
  type CreateDbOptions,
  createDb,
  type Database,
  type DbDriver,
  type DbHandle,
} from '@vfio-fleet/db';
import postgres from 'postgres';
import { WebSocket } from 'ws';
import { createLogger, type Logger } from '../../src/logger';
import { type RunningServer, type StartServerOptions, startServer } from '../../src/server';

const maintenanceUrl = process.env.DATABASE_URL || undefined;
export const drivers: DbDriver[] = maintenanceUrl ? ['pglite', 'postgres'] : ['pglite'];

export interface Fleet {
  db: Database;
  /** The database handle (its listen, for a second server on the same database). */
  handle: DbHandle;
  /** The current server (restart() replaces it). */
  server: RunningServer;
  /** http://127.0.0.1:PORT */
  url: string;
  /** ws://127.0.0.1:PORT/api/agent */
  wsUrl: string;
  /** Stops the server (as a crash or a deploy would) and starts a new one on the same port and database. */
  restart(): Promise<RunningServer>;
  close(): Promise<void>;
}

export interface TestDb {
  handle: DbHandle;
  db: Database;
  close(): Promise<void>;
}

/** A fresh, empty PostgreSQL database (for a server process of its own, too), and its drop. */
export async function scratchPostgres(): Promise<{ url: string; drop(): Promise<void> }> {
  if (maintenanceUrl === undefined) throw new Error('DATABASE_URL is not set');
  const name = `vf_test_${randomBytes(6).toString('hex')}`;
  const admin = postgres(maintenanceUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE "${name}"`);
  const url = new URL(maintenanceUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      // WITH (FORCE): a connection a failed test left open must not keep the database alive.
      await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.end({ timeout: 5 });
    },
  };
}

/** A migrated throwaway database: PGlite in memory, or a fresh PostgreSQL database dropped on close. */
export async function openTestDb(
  driver: DbDriver,
  options: Pick<CreateDbOptions, 'apiStatementTimeoutMs'> = {},
): Promise<TestDb> {
  let handle: DbHandle;
  let dispose: () => Promise<void> = async () => {};
  if (driver === 'pglite') {
    handle = await createDb({ dataDir: 'memory://', env: {}, ...options });
  } else {
    const scratch = await scratchPostgres();
    handle = await createDb({ url: scratch.url, env: {}, ...options });
    dispose = scratch.drop;
  }
  await handle.migrate();
  return {
    handle,
    db: handle.db,
    async close() {
      await handle.close();
      await dispose();
    },
  };
}

/** A migrated throwaway database and the server on it. */
export async function startFleet(
  driver: DbDriver,
  options: {
    heartbeatSeconds?: number;
    offlineAfterSeconds?: number;
    helloTimeoutMs?: number;
    jobs?: StartServerOptions['jobs'];
    /** Default: silent (debug with VFIO_FLEET_TEST_LOG=1). */
    logger?: Logger;
  } & Pick<CreateDbOptions, 'apiStatementTimeoutMs'> &
    Pick<
      StartServerOptions,
      | 'frameLimits'
      | 'failedHelloLimits'
      | 'trustProxy'
      | 'publicUrl'
      | 'metricsToken'
      | 'next'
      | 'loginLimiters'
      | 'sessionTtlHours'
      | 'downloadsDir'
      | 'maxConcurrentIngests'
      | 'apiQueryTimeoutMs'
    > = {},
): Promise<Fleet> {
  const { apiStatementTimeoutMs, ...serverOptions } = options;
  const testDb = await openTestDb(driver, { apiStatementTimeoutMs });
  const { handle } = testDb;
  const start = (port: number) =>
    startServer({
      port,
      db: handle.db,
      apiDb: handle.apiDb,
      listen: handle.listen,
      ...serverOptions,
      logger:
        serverOptions.logger ??
        createLogger(process.env.VFIO_FLEET_TEST_LOG === '1' ? 'debug' : 'silent'),
    });
  let server = await start(0);
  const port = Number(new URL(server.url).port);
  return {
    db: handle.db,
    handle,
    get server() {
      return server;
    },
    url: server.url,
    wsUrl: `${server.url.replace('http', 'ws')}/api/agent`,
    async restart() {
      await server.close();
      // The same port, so agents started with this URL find the new server when they redial.
      server = await start(port);
      return server;
    },
    async close() {
      await server.close();
      await testDb.close();
    },
  };
}

// --- real agents --------------------------------------------------------------------------------

const agentDir = path.resolve(import.meta.dirname, '../../../agent');
const agentBin = path.join(agentDir, 'bin/vfio-fleet-agent.mjs');

export interface AgentProcess {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): Promise<number | string>;
}

export function startAgent(
  args: readonly string[],
  env: Record<string, string> = {},
): AgentProcess {
  const child = spawn(process.execPath, [agentBin, 'run', ...args], {
    cwd: agentDir,
    env: { ...process.env, NO_COLOR: '1', VFIO_FLEET_LOG_LEVEL: 'debug', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return {
    child,
    stderr: () => stderr,
    exited,
    kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** `scan --json` of a fixture tree: a real, valid snapshot for raw clients to send. */
export function scanJson(root: string): unknown {
  const out = execFileSync(process.execPath, [agentBin, 'scan', '--root', root, '--json'], {
    cwd: agentDir,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out);
}

// --- a raw client -------------------------------------------------------------------------------

/** A WebSocket client that records every server message and the close code. */
export class RawClient {
  readonly received: ServerMessage[] = [];
  closeCode: number | null = null;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const parsed = parseServerMessage(Buffer.isBuffer(data) ? data : Buffer.from(String(data)));
      if (parsed.ok) this.received.push(parsed.message);
    });
    ws.on('close', (code) => {
      this.closeCode = code;
    });
    ws.on('error', () => undefined);
  }

  static async connect(url: string): Promise<RawClient> {
    const ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024 });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return new RawClient(ws);
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }

  async next<T extends ServerMessage['type']>(
    type: T,
    from = 0,
    timeoutMs = 10_000,
  ): Promise<Extract<ServerMessage, { type: T }>> {
    const found = await poll(
      () =>
        this.received
          .slice(from)
          .find((m): m is Extract<ServerMessage, { type: T }> => m.type === type),
      timeoutMs,
    );
    if (found === undefined) {
      throw new Error(`no ${type} within ${timeoutMs} ms; got ${JSON.stringify(this.received)}`);
    }
    return found;
  }

  async closed(timeoutMs = 10_000): Promise<number> {
    const code = await poll(() => this.closeCode ?? undefined, timeoutMs);
    if (code === undefined) throw new Error('the server did not close the connection');
    return code;
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Polls until `check` returns something other than undefined, or the timeout passes. */
export async function poll<T>(
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
): Promise<T | undefined> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() >= end) return undefined;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A hello as a real agent sends it. */
export function hello(auth: unknown, overrides: Record<string, unknown> = {}) {
  return {
    type: 'hello',
    protocolVersion: 1,
    agentVersion: 'test',
    host: { hostname: 'raw-client', machineId: null, kernelRelease: null },
    auth,
    labels: {},
    resume: null,
    ...overrides,
  };
}
