/**
 * The one server process: an HTTP server with the agent gateway on `/api/agent`, `GET /api/health`,
 * the tRPC API on `/api/trpc/*`, and Next.js (when given) for every other path — one port.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Database, hosts, type Listen, ping } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { createApiHandler, TRPC_PATH } from './api/http-handler';
import { publicUrl } from './api/public-url';
import type { LoginLimiters } from './api/trpc';
import { AgentDownloads, DEFAULT_DOWNLOADS_DIR } from './downloads/agent-downloads';
import { createDownloadsHandler, isDownloadsPath } from './downloads/downloads-handler';
import { AgentGateway } from './gateway/agent-gateway';
import type { FailedHelloLimits } from './gateway/hello-guard';
import type { FrameLimits } from './gateway/rate-limit';
import { HTTP_SERVER_TIMEOUTS } from './gateway/upgrade';
import { JobDispatcher, type JobDispatcherDeps } from './jobs/dispatcher';
import type { Logger } from './logger';
import type { NextHandler } from './next-handler';
import { withDeadline } from './ops/deadline';
import { FleetMetrics } from './ops/metrics';
import { requestUrl } from './request-url';
import { preparePageRequest, setSecurityHeaders } from './security-headers';

export interface StartServerOptions {
  port: number;
  /** Default 127.0.0.1 here (tests); main.ts passes the env's HOST. */
  host?: string;
  db: Database;
  /**
   * What the dashboard's API queries through (DbHandle.apiDb: connections of its own on
   * PostgreSQL); default `db`.
   */
  apiDb?: Database;
  logger: Logger;
  heartbeatSeconds?: number;
  offlineAfterSeconds?: number;
  helloTimeoutMs?: number;
  /** When set, GET /metrics needs `Authorization: Bearer <token>` (METRICS_TOKEN). */
  metricsToken?: string;
  /**
   * Take clients' addresses from X-Forwarded-For and this server's URL from X-Forwarded-Host and
   * X-Forwarded-Proto (VFIO_FLEET_TRUST_PROXY=1).
   */
  trustProxy?: boolean;
  /** This server's URL for agents (VFIO_FLEET_PUBLIC_URL); default: from each request. */
  publicUrl?: string;
  /** Per-connection frame rate (tests shorten it). */
  frameLimits?: FrameLimits;
  /** Failed hellos per address before unknown agents' hellos are refused (tests shorten it). */
  failedHelloLimits?: FailedHelloLimits;
  /** Snapshots parsed and stored at once, server-wide (the gateway's default: 4). */
  maxConcurrentIngests?: number;
  /**
   * The DbHandle's LISTEN: how a job created through another server process reaches an agent
   * connected to this one at once. Without it, only the dispatcher's poll finds such jobs.
   */
  listen?: Listen;
  /** Next.js's request handler (next-handler.ts): every path not served here goes to it. */
  next?: NextHandler;
  /** How long a login lasts (SESSION_TTL_HOURS, default 12). */
  sessionTtlHours?: number;
  /** Failed-login limits (tests shorten them). */
  loginLimiters?: LoginLimiters;
  /** Dispatcher timings (tests shorten them). */
  jobs?: Pick<JobDispatcherDeps, 'leaseSeconds' | 'pollMs' | 'runningGraceSeconds'>;
  /** Where the packaged agent is (VFIO_FLEET_DOWNLOADS_DIR; default this checkout's packaging/dist). */
  downloadsDir?: string;
  /** How long an API call may wait for the database (VFIO_FLEET_API_QUERY_TIMEOUT_MS). */
  apiQueryTimeoutMs?: number;
}

export interface RunningServer {
  url: string;
  gateway: AgentGateway;
  metrics: FleetMetrics;
  dispatcher: JobDispatcher;
  close(): Promise<void>;
}

export interface Health {
  ok: boolean;
  database: 'up' | 'down';
  hosts: { online: number; offline: number };
  agents: number;
}

/** /api/health says the database is down when it does not answer within this (see ops/deadline). */
const HEALTH_DATABASE_TIMEOUT_MS = 3_000;

export async function health(
  db: Database,
  gateway: AgentGateway,
  timeoutMs = HEALTH_DATABASE_TIMEOUT_MS,
): Promise<Health> {
  try {
    const rows = await withDeadline(
      (async () => {
        await ping(db);
        return db
          .select({ state: hosts.state, count: sql<number>`count(*)::int` })
          .from(hosts)
          .groupBy(hosts.state);
      })(),
      timeoutMs,
      'the database',
    );
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
  // The gateway reports into the metrics and the metrics read the gateway's connection count at
  // scrape time, so the count is reached through a closure made before the gateway exists.
  let connected = () => 0;
  const metrics = new FleetMetrics({
    db,
    logger,
    agentsConnected: () => connected(),
    token: options.metricsToken,
  });
  const dispatcher = new JobDispatcher({
    db,
    logger,
    // Names this process in lease_owner; a restarted process is a new owner.
    instanceId: randomUUID(),
    listen: options.listen,
    ...options.jobs,
  });
  await dispatcher.start();
  const gateway = new AgentGateway({
    db,
    logger,
    dispatcher,
    heartbeatSeconds: options.heartbeatSeconds,
    offlineAfterSeconds: options.offlineAfterSeconds,
    helloTimeoutMs: options.helloTimeoutMs,
    metrics,
    trustProxy: options.trustProxy,
    frameLimits: options.frameLimits,
    failedHelloLimits: options.failedHelloLimits,
    maxConcurrentIngests: options.maxConcurrentIngests,
  });
  connected = () => gateway.connectedAgents;
  const downloads = new AgentDownloads(options.downloadsDir ?? DEFAULT_DOWNLOADS_DIR, logger);
  const urlOptions = { trustProxy: options.trustProxy ?? false, configured: options.publicUrl };
  const serverUrl = (req: IncomingMessage) => publicUrl(req, urlOptions);
  const serveDownload = createDownloadsHandler(downloads, logger, serverUrl);
  const api = createApiHandler({
    db: options.apiDb ?? db,
    logger,
    gateway,
    dispatcher,
    downloads,
    sessionTtlHours: options.sessionTtlHours,
    loginLimiters: options.loginLimiters,
    serverUrl,
    apiQueryTimeoutMs: options.apiQueryTimeoutMs,
  });
  const server = createServer(HTTP_SERVER_TIMEOUTS, (req: IncomingMessage, res: ServerResponse) => {
    setSecurityHeaders(res);
    const url = requestUrl(req);
    if (url === null) {
      sendJson(res, 400, { error: 'the request target is not a valid URL' });
      return;
    }
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
    if (req.method === 'GET' && url.pathname === '/metrics') {
      metrics.handle(req, res).catch((error: unknown) => {
        logger.error({ err: error }, 'metrics scrape failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal' });
        else res.destroy();
      });
      return;
    }
    if (isDownloadsPath(url.pathname)) {
      serveDownload(req, res, url.pathname).catch((error: unknown) => {
        logger.error({ err: error, path: url.pathname }, 'download failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal' });
        else res.destroy();
      });
      return;
    }
    if (url.pathname === TRPC_PATH || url.pathname.startsWith(`${TRPC_PATH}/`)) {
      api(req, res);
      return;
    }
    if (options.next !== undefined) {
      preparePageRequest(req, res);
      options.next(req, res).catch((error: unknown) => {
        logger.error({ err: error }, 'next.js request failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal' });
        else res.destroy();
      });
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
    metrics,
    dispatcher,
    async close() {
      await gateway.stop();
      metrics.close();
      await dispatcher.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
