/**
 * The one server process: an HTTP server with the agent gateway on `/api/agent` and, for now,
 * `GET /api/health`. Next.js and the tRPC API join this same server (and port) in the next step.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Database, hosts, ping } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { AgentGateway } from './gateway/agent-gateway';
import type { Logger } from './logger';

export interface StartServerOptions {
  port: number;
  /** Default 127.0.0.1 here (tests); main.ts passes the env's HOST. */
  host?: string;
  db: Database;
  logger: Logger;
  heartbeatSeconds?: number;
  offlineAfterSeconds?: number;
  helloTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  gateway: AgentGateway;
  close(): Promise<void>;
}

export interface Health {
  ok: boolean;
  database: 'up' | 'down';
  hosts: { online: number; offline: number };
  agents: number;
}

export async function health(db: Database, gateway: AgentGateway): Promise<Health> {
  try {
    await ping(db);
    const rows = await db
      .select({ state: hosts.state, count: sql<number>`count(*)::int` })
      .from(hosts)
      .groupBy(hosts.state);
    const count = (state: string) => rows.find((r) => r.state === state)?.count ?? 0;
    return {
      ok: true,
      database: 'up',
      hosts: { online: count('online'), offline: count('offline') },
      agents: gateway.connectedAgents,
    };
  } catch {
    return {
      ok: false,
      database: 'down',
      hosts: { online: 0, offline: 0 },
      agents: gateway.connectedAgents,
    };
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const { db, logger } = options;
  const gateway = new AgentGateway({
    db,
    logger,
    heartbeatSeconds: options.heartbeatSeconds,
    offlineAfterSeconds: options.offlineAfterSeconds,
    helloTimeoutMs: options.helloTimeoutMs,
  });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (req.method === 'GET' && url.pathname === '/api/health') {
      health(db, gateway).then(
        (body) => sendJson(res, body.ok ? 200 : 503, body),
        (error: unknown) => {
          logger.error({ err: error }, 'health check failed');
          sendJson(res, 500, { ok: false });
        },
      );
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  });
  gateway.attach(server);
  gateway.start();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  logger.info({ url }, 'server listening');
  return {
    url,
    gateway,
    async close() {
      await gateway.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
