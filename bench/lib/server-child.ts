// The server under load, in its own process (as in production): `fleet` is the real server
// (startServer: gateway, ingest, dispatcher, tRPC) on a bench database; `bare` is the baseline, a
// plain `ws` server that speaks just enough of the protocol (JSON.parse each frame, answer hello,
// ack snapshots and deltas, pong pings) to show what the transport alone costs on this machine.
//
// The parent (server-process.ts) talks to it over IPC: stats (memory after a GC, event-loop
// delay, CPU), and the fleet-only commands a scenario needs (reset inventories, create jobs,
// count rows). Run with `node --expose-gc --import tsx`.
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { encodeMessage, PROTOCOL_VERSION, type ServerMessage } from '@vfio-fleet/core';
import {
  createDb,
  type DbHandle,
  devices,
  enrollmentTokens,
  hosts,
  iommuGroups,
  jobs,
  users,
} from '@vfio-fleet/db';
import {
  createEnrollmentToken,
  createJob,
  createLogger,
  createSession,
  hashPassword,
  previewJob,
  type RunningServer,
  startServer,
} from '@vfio-fleet/web';
import { eq, gt, inArray, sql } from 'drizzle-orm';
import { WebSocketServer } from 'ws';
import type { ChildReply, ChildRequest, ChildStats, JobSpec } from './server-protocol';

const mode = process.env.BENCH_SERVER_MODE === 'bare' ? 'bare' : 'fleet';
const port = Number(process.env.BENCH_SERVER_PORT ?? '0');
const heartbeatSeconds = Number(process.env.BENCH_HEARTBEAT_SECONDS ?? '10');

const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
let cpuMark = process.cpuUsage();
let wallMark = performance.now();

function send(reply: ChildReply): void {
  process.send?.(reply);
}

function gc(): void {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (collect !== undefined) {
    collect();
    collect();
  }
}

function stats(reset: boolean, connected: number): ChildStats {
  gc();
  const memory = process.memoryUsage();
  const cpu = process.cpuUsage(cpuMark);
  const wallMs = performance.now() - wallMark;
  const result: ChildStats = {
    rssBytes: memory.rss,
    heapUsedBytes: memory.heapUsed,
    externalBytes: memory.external + memory.arrayBuffers,
    loopDelayP50Ms: loopDelay.percentile(50) / 1e6,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loopDelayMaxMs: loopDelay.max / 1e6,
    cpuShare: (cpu.user + cpu.system) / 1000 / Math.max(1, wallMs),
    connected,
  };
  if (reset) {
    loopDelay.reset();
    cpuMark = process.cpuUsage();
    wallMark = performance.now();
  }
  return result;
}

// --- the baseline: a bare ws server ---------------------------------------------------------------

async function startBare(): Promise<{
  url: string;
  connected: () => number;
  close: () => Promise<void>;
}> {
  const http = createServer((_req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({
    server: http,
    path: '/api/agent',
    maxPayload: 8 * 1024 * 1024,
  });
  let connected = 0;
  wss.on('connection', (ws) => {
    let welcomed = false;
    ws.on('message', (data) => {
      // What any server must do with a frame: decode it and answer. Nothing is validated or stored.
      const message = JSON.parse(String(data)) as {
        type?: string;
        epoch?: string;
        seq?: number;
        nonce?: string;
        auth?: { kind?: string; agentId?: string };
      };
      let reply: ServerMessage | null = null;
      switch (message.type) {
        case 'hello': {
          const agentId = message.auth?.agentId ?? randomUUID();
          if (!welcomed) connected += 1;
          welcomed = true;
          reply = {
            type: 'welcome',
            protocolVersion: PROTOCOL_VERSION,
            agentId,
            credential:
              message.auth?.kind === 'enroll'
                ? { agentId, secret: randomBytes(32).toString('base64url') }
                : null,
            // The bare server keeps nothing, so every agent would send a snapshot: say `ok`, as a
            // server that holds the state would to a resuming agent.
            resume: message.auth?.kind === 'enroll' ? 'snapshot' : 'ok',
            heartbeatSeconds,
          };
          break;
        }
        case 'snapshot':
        case 'delta':
          reply = { type: 'ack', epoch: message.epoch ?? '', seq: message.seq ?? 0 };
          break;
        case 'ping':
          reply = { type: 'pong', nonce: message.nonce ?? 'x' };
          break;
        default:
          reply = null;
      }
      if (reply !== null) ws.send(encodeMessage(reply));
    });
    ws.on('close', () => {
      if (welcomed) connected -= 1;
    });
    ws.on('error', () => {});
  });
  await new Promise<void>((resolve) => http.listen(port, '127.0.0.1', resolve));
  const address = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    connected: () => connected,
    async close() {
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

// --- the real server ------------------------------------------------------------------------------

interface Fleet {
  handle: DbHandle;
  server: RunningServer;
  adminId: string;
}

async function startFleet(): Promise<Fleet> {
  const handle = await createDb();
  await handle.migrate();
  const logger = createLogger((process.env.BENCH_SERVER_LOG ?? 'warn') as 'warn');
  const server = await startServer({
    port,
    db: handle.db,
    apiDb: handle.apiDb,
    listen: handle.listen,
    logger,
    heartbeatSeconds,
  });
  const [existing] = await handle.db
    .select({ id: users.id })
    .from(users)
    .where(eq(users.username, 'bench'));
  let adminId = existing?.id;
  if (adminId === undefined) {
    const [row] = await handle.db
      .insert(users)
      .values({
        username: 'bench',
        passwordHash: await hashPassword('bench-password'),
        role: 'admin',
      })
      .returning({ id: users.id });
    adminId = row?.id;
  }
  if (adminId === undefined) throw new Error('could not create the bench admin');
  return { handle, server, adminId };
}

async function fleetCommand(fleet: Fleet, request: ChildRequest): Promise<ChildReply> {
  const { db } = fleet.handle;
  switch (request.cmd) {
    case 'token': {
      const { token } = await createEnrollmentToken(db, { ttlSeconds: 6 * 3600, label: 'bench' });
      return { id: request.id, ok: true, value: token };
    }
    case 'reset-fleet': {
      // Every host and what hangs off it (devices, groups, labels, credentials, jobs): the next
      // enrollment storm starts from an empty fleet.
      await db.execute(sql`TRUNCATE ${hosts}, ${enrollmentTokens} CASCADE`);
      return { id: request.id, ok: true, value: null };
    }
    case 'reset-inventory': {
      // Cold again: no device or group rows, and no stored stream, so every agent's next snapshot
      // is stored from scratch.
      await db.execute(sql`TRUNCATE ${devices}, ${iommuGroups}`);
      // The dashboard's per-host rollups are derived from the inventory: cold with it.
      await db.execute(sql`TRUNCATE host_device_stats, host_blocking_reasons`);
      await db
        .update(hosts)
        .set({ epoch: null, lastSeq: null, inventoryHash: null, rawInventoryHash: null });
      return { id: request.id, ok: true, value: null };
    }
    case 'vacuum-analyze-if-no-autovacuum': {
      // A server with PostgreSQL's default configuration vacuums and analyzes these tables by
      // itself: autovacuum visits a table once a fifth of it is dead rows or a tenth changed (the
      // hosts table's 5,000 rows are rewritten every few seconds by heartbeats and deltas; a
      // million inserted device rows get analyzed). This machine's PostgreSQL runs with
      // autovacuum off, so its tables keep every dead row and no statistics, and the planner
      // guesses (the dashboard's sums over the rollups: 13-23 ms without statistics, 4 ms with).
      // So, between scenarios and untimed, the bench does what autovacuum would have done, and
      // says so in its log and results. PGlite has no autovacuum either.
      const rows = await db.execute(
        sql`SELECT current_setting('autovacuum') = 'on' AND EXISTS (
              SELECT 1 FROM pg_stat_activity WHERE backend_type = 'autovacuum launcher') AS running`,
      );
      const [row] = (Array.isArray(rows) ? rows : (rows as { rows: unknown[] }).rows) as {
        running: boolean;
      }[];
      if (row?.running === true) return { id: request.id, ok: true, value: false };
      await db.execute(sql`VACUUM ANALYZE`);
      return { id: request.id, ok: true, value: true };
    }
    case 'count': {
      const since = request.since === undefined ? null : new Date(request.since);
      const [deviceRows] = await db
        .select({ n: sql<number>`count(*)::int` })
        .from(devices)
        .where(since === null ? undefined : gt(devices.updatedAt, since));
      const [hostRows] = await db
        .select({ n: sql<number>`count(*)::int` })
        .from(hosts)
        .where(eq(hosts.state, 'online'));
      return {
        id: request.id,
        ok: true,
        value: { devices: deviceRows?.n ?? 0, onlineHosts: hostRows?.n ?? 0 },
      };
    }
    case 'session': {
      const { token } = await createSession(db, fleet.adminId);
      return { id: request.id, ok: true, value: token };
    }
    case 'create-jobs': {
      const created = await createJobs(fleet, request.jobs);
      return { id: request.id, ok: true, value: created };
    }
    case 'job-stats': {
      const rows = await db
        .select({
          id: jobs.id,
          state: jobs.state,
          attempt: jobs.attempt,
          dispatchMs: sql<
            number | null
          >`extract(epoch from (${jobs.dispatchedAt} - ${jobs.createdAt})) * 1000`,
          acceptMs: sql<
            number | null
          >`extract(epoch from (${jobs.acceptedAt} - ${jobs.createdAt})) * 1000`,
          finishMs: sql<
            number | null
          >`extract(epoch from (${jobs.finishedAt} - ${jobs.createdAt})) * 1000`,
          results: sql<number>`(select count(*)::int from job_events e where e.job_id = "jobs"."id" and e.to_state in ('succeeded','failed','rolled_back'))`,
        })
        .from(jobs)
        .where(inArray(jobs.id, request.ids));
      return { id: request.id, ok: true, value: rows };
    }
    default:
      return { id: request.id, ok: false, error: `unknown command ${request.cmd}` };
  }
}

/** Creates each job the way the API does (preview, then create with its hash), concurrently. */
async function createJobs(fleet: Fleet, specs: readonly JobSpec[]): Promise<string[]> {
  const { db } = fleet.handle;
  const actor = { userId: fleet.adminId, username: 'bench', role: 'admin' as const };
  const byHost = await db
    .select({ id: hosts.id, hostname: hosts.hostname })
    .from(hosts)
    .where(inArray(hosts.hostname, [...new Set(specs.map((s) => s.hostname))]));
  const hostIds = new Map(byHost.map((h) => [h.hostname, h.id]));
  const ids: string[] = [];
  const wake = (hostId: string) => fleet.server.dispatcher.wake(hostId);
  let next = 0;
  const worker = async () => {
    while (next < specs.length) {
      const spec = specs[next++];
      if (spec === undefined) break;
      const hostId = hostIds.get(spec.hostname);
      if (hostId === undefined) throw new Error(`no host ${spec.hostname}`);
      const preview = await previewJob(db, { hostId, address: spec.address, target: 'vfio' });
      const job = await createJob(
        db,
        actor,
        {
          hostId,
          address: spec.address,
          target: 'vfio',
          acknowledge: true,
          previewHash: preview.previewHash,
          force: true,
        },
        wake,
      );
      ids.push(job.id);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return ids;
}

/** Without its bench (killed, crashed), a server child must not live on holding a port and a database. */
process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));

async function main(): Promise<void> {
  if (mode === 'bare') {
    const bare = await startBare();
    process.on('message', (raw: ChildRequest) => {
      if (raw.cmd === 'stats')
        send({ id: raw.id, ok: true, value: stats(raw.reset === true, bare.connected()) });
      else send({ id: raw.id, ok: false, error: `the bare server has no ${raw.cmd}` });
    });
    process.once('SIGTERM', () => {
      bare.close().finally(() => process.exit(0));
    });
    send({ id: 0, ok: true, value: { url: bare.url } });
    return;
  }
  const fleet = await startFleet();
  process.on('message', (raw: ChildRequest) => {
    if (raw.cmd === 'stats') {
      send({
        id: raw.id,
        ok: true,
        value: stats(raw.reset === true, fleet.server.gateway.connectedAgents),
      });
      return;
    }
    fleetCommand(fleet, raw).then(send, (error: unknown) =>
      send({
        id: raw.id,
        ok: false,
        error: error instanceof Error ? error.message : String(error),
      }),
    );
  });
  process.once('SIGTERM', () => {
    fleet.server
      .close()
      .then(() => fleet.handle.close())
      .finally(() => process.exit(0));
  });
  send({ id: 0, ok: true, value: { url: fleet.server.url } });
}

main().catch((error: unknown) => {
  process.stderr.write(`bench server: ${error instanceof Error ? error.stack : String(error)}\n`);
  process.exit(1);
});
