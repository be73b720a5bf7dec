/**
 * The server's Prometheus metrics (`GET /metrics`).
 *
 * Two kinds: what this process saw (agent frames by type and result, ingest latency, auth
 * failures, rate limiting, connected agents, process metrics), kept in memory; and the fleet as
 * the database holds it (hosts by state, devices by status, jobs by state), read at scrape time
 * with one aggregate query each and cached for a moment, so several Prometheus servers scraping
 * every few seconds cost one set of queries. When the database is unreachable the scrape still
 * answers, with the in-process series and `vfio_fleet_database_up 0`: the outage is exactly when
 * the gateway's counters matter.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import {
  type Database,
  DEVICE_STATUSES,
  devices,
  HOST_STATES,
  hosts,
  JOB_STATES,
  jobs,
} from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import type { Logger } from '../logger';
import { withDeadline } from './deadline';
import { Counter, Gauge, Histogram, PROMETHEUS_CONTENT_TYPE, Registry } from './prometheus';

/** What a frame from an agent came to. */
export type MessageResult =
  /** Handled as the protocol says (stored and acked, answered, accepted). */
  | 'ok'
  /** Not a valid message, or not allowed in the session's state. */
  | 'rejected'
  /** A delta that did not fit the stored state: the agent was asked for a snapshot. */
  | 'resync'
  /** A snapshot byte-for-byte what this process last stored for the host: acked unparsed. */
  | 'unchanged'
  /** A hello whose token or credential was refused. */
  | 'auth-failed'
  /** Handling it failed (the database, a bug): the connection was closed. */
  | 'error';

export type RateLimit = 'frames' | 'failed-hellos';

/** What the agent gateway reports; a no-op stands in when the server runs without metrics. */
export interface GatewayMetrics {
  /** `type` is the message type, or `invalid` for a frame that did not parse. */
  message(type: string, result: MessageResult): void;
  ingest(kind: 'snapshot' | 'delta', seconds: number, devicesWritten: number): void;
  authFailure(): void;
  /**
   * `frames`: a connection began a throttled stretch or was closed; `failed-hellos`: a hello was
   * refused unverified after too many failures from its address.
   */
  rateLimited(limit: RateLimit): void;
}

export const NO_GATEWAY_METRICS: GatewayMetrics = {
  message() {},
  ingest() {},
  authFailure() {},
  rateLimited() {},
};

export interface FleetMetricsOptions {
  db: Database;
  logger: Logger;
  /** Authenticated agent connections of this process, read at scrape time. */
  agentsConnected: () => number;
  /** How long the database gauges are reused (default 2 s). */
  cacheMs?: number;
  /** A scrape does not wait longer than this for the database (default 3 s). */
  databaseTimeoutMs?: number;
  /** When set, /metrics needs `Authorization: Bearer <token>`. */
  token?: string;
}

/** Ingest of 1 device to many thousands, in one transaction: 1 ms to 30 s. */
const INGEST_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface FleetCounts {
  hosts: Map<string, number>;
  devices: Map<string, number>;
  jobs: Map<string, number>;
  /** Online hosts by the agent version they reported ('' when none). */
  agentVersions: Map<string, number>;
}

export class FleetMetrics implements GatewayMetrics {
  readonly registry = new Registry();
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly agentsConnected: () => number;
  private readonly cacheMs: number;
  private readonly databaseTimeoutMs: number;
  private readonly tokenHash: Buffer | null;
  private cached: { at: number; counts: Promise<FleetCounts | null> } | null = null;
  private readonly loopDelay = monitorEventLoopDelay({ resolution: 20 });

  readonly messages = this.registry.register(
    new Counter(
      'vfio_fleet_agent_messages_total',
      'Frames received from agents, by message type and what they came to.',
      ['type', 'result'],
    ),
  );
  readonly ingestSeconds = this.registry.register(
    new Histogram(
      'vfio_fleet_ingest_seconds',
      'Time to store one snapshot or delta (one transaction), in seconds.',
      ['kind'],
      INGEST_BUCKETS,
    ),
  );
  readonly devicesWritten = this.registry.register(
    new Counter(
      'vfio_fleet_ingest_devices_written_total',
      'Device rows inserted or changed by ingest (unchanged devices are not written).',
    ),
  );
  readonly authFailures = this.registry.register(
    new Counter(
      'vfio_fleet_agent_auth_failures_total',
      'Agent hellos refused: unknown, expired or used-up token; unknown, wrong or revoked credential.',
    ),
  );
  readonly rateLimitedTotal = this.registry.register(
    new Counter(
      'vfio_fleet_agent_rate_limited_total',
      'Rate limiting: a connection slowed (once per throttled stretch) or closed for sending too many frames (limit="frames"), a hello refused unverified after too many failed hellos from its address (limit="failed-hellos").',
      ['limit'],
    ),
  );
  private readonly agentsGauge = this.registry.register(
    new Gauge('vfio_fleet_agents_connected', 'Authenticated agent connections to this process.'),
  );
  private readonly databaseUp = this.registry.register(
    new Gauge(
      'vfio_fleet_database_up',
      '1 when the last database read for these metrics succeeded.',
    ),
  );
  private readonly hostsGauge = this.registry.register(
    new Gauge('vfio_fleet_hosts', 'Hosts by state (whole fleet, from the database).', ['state']),
  );
  private readonly devicesGauge = this.registry.register(
    new Gauge(
      'vfio_fleet_devices',
      'Devices by passthrough status (whole fleet, from the database).',
      ['status'],
    ),
  );
  private readonly agentVersionsGauge = this.registry.register(
    new Gauge(
      'vfio_fleet_agents_online_by_version',
      'Online hosts by the agent version they reported at hello (whole fleet, from the database; version="" when none).',
      ['version'],
    ),
  );
  private readonly jobsGauge = this.registry.register(
    new Gauge('vfio_fleet_jobs', 'Jobs by state (whole fleet, from the database).', ['state']),
  );
  // The process series prom-client's default collector would export, under the same names.
  private readonly cpuUser = this.registry.register(
    new Counter('process_cpu_user_seconds_total', 'User CPU time spent in seconds.'),
  );
  private readonly cpuSystem = this.registry.register(
    new Counter('process_cpu_system_seconds_total', 'System CPU time spent in seconds.'),
  );
  private readonly cpuTotal = this.registry.register(
    new Counter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.'),
  );
  private readonly residentMemory = this.registry.register(
    new Gauge('process_resident_memory_bytes', 'Resident memory size in bytes.'),
  );
  private readonly startTime = this.registry.register(
    new Gauge(
      'process_start_time_seconds',
      'Start time of the process since unix epoch in seconds.',
    ),
  );
  private readonly heapUsed = this.registry.register(
    new Gauge('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.'),
  );
  private readonly heapTotal = this.registry.register(
    new Gauge('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.'),
  );
  private readonly loopLagP99 = this.registry.register(
    new Gauge(
      'nodejs_eventloop_lag_p99_seconds',
      'The 99th percentile of event loop delay since the previous scrape, in seconds.',
    ),
  );

  constructor(options: FleetMetricsOptions) {
    this.db = options.db;
    this.logger = options.logger.child({ component: 'metrics' });
    this.agentsConnected = options.agentsConnected;
    this.cacheMs = options.cacheMs ?? 2_000;
    this.databaseTimeoutMs = options.databaseTimeoutMs ?? 3_000;
    this.tokenHash = options.token === undefined ? null : sha256(options.token);
    // Every series that can appear exists from the start at 0, so rate() and alerts on them work
    // before the first event (an absent series is not a zero one in PromQL).
    this.authFailures.init({});
    this.devicesWritten.init({});
    for (const limit of ['frames', 'failed-hellos'] as const) this.rateLimitedTotal.init({ limit });
    for (const kind of ['snapshot', 'delta'] as const) this.ingestSeconds.init({ kind });
    this.startTime.set({}, Math.round((Date.now() - performance.now()) / 1000));
    this.loopDelay.enable();
  }

  message(type: string, result: MessageResult): void {
    this.messages.inc({ type, result });
  }

  ingest(kind: 'snapshot' | 'delta', seconds: number, devicesWritten: number): void {
    this.ingestSeconds.observe({ kind }, seconds);
    this.devicesWritten.inc({}, devicesWritten);
  }

  authFailure(): void {
    this.authFailures.inc({});
  }

  rateLimited(limit: RateLimit): void {
    this.rateLimitedTotal.inc({ limit });
  }

  /** The whole exposition, reading the database (or the cache) for the fleet gauges. */
  async render(): Promise<string> {
    const counts = await this.fleetCounts();
    this.hostsGauge.clear();
    this.devicesGauge.clear();
    this.jobsGauge.clear();
    this.agentVersionsGauge.clear();
    this.databaseUp.set({}, counts === null ? 0 : 1);
    if (counts !== null) {
      // Every known value, zeros included: a state nobody is in is 0, not a missing series.
      for (const state of HOST_STATES) this.hostsGauge.set({ state }, counts.hosts.get(state) ?? 0);
      for (const status of DEVICE_STATUSES) {
        this.devicesGauge.set({ status }, counts.devices.get(status) ?? 0);
      }
      for (const state of JOB_STATES) this.jobsGauge.set({ state }, counts.jobs.get(state) ?? 0);
      for (const [version, count] of counts.agentVersions) {
        this.agentVersionsGauge.set({ version }, count);
      }
    }
    this.agentsGauge.set({}, this.agentsConnected());
    this.collectProcess();
    return this.registry.render();
  }

  /** Answers `GET /metrics`, checking the bearer token when one is configured. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.tokenHash !== null && !this.authorized(req.headers.authorization)) {
      res.writeHead(401, {
        'content-type': 'text/plain; charset=utf-8',
        'www-authenticate': 'Bearer realm="metrics"',
      });
      res.end('unauthorized\n');
      return;
    }
    const body = await this.render();
    res.writeHead(200, {
      'content-type': PROMETHEUS_CONTENT_TYPE,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    });
    res.end(body);
  }

  close(): void {
    this.loopDelay.disable();
  }

  private authorized(header: string | undefined): boolean {
    if (this.tokenHash === null) return true;
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (match?.[1] === undefined) return false;
    // Hashing both sides gives equal lengths, so the comparison is constant-time whatever was sent.
    return timingSafeEqual(sha256(match[1]), this.tokenHash);
  }

  /** The cached counts, or a fresh read shared by every scrape that arrives while it runs. */
  private fleetCounts(): Promise<FleetCounts | null> {
    const now = performance.now();
    if (this.cached !== null && now - this.cached.at < this.cacheMs) return this.cached.counts;
    const counts = this.readCounts();
    this.cached = { at: now, counts };
    return counts;
  }

  private async readCounts(): Promise<FleetCounts | null> {
    const read = async (): Promise<FleetCounts> => {
      const [hostRows, deviceRows, jobRows, versionRows] = await Promise.all([
        this.db
          .select({ key: hosts.state, count: sql<number>`count(*)::int` })
          .from(hosts)
          .groupBy(hosts.state),
        this.db
          .select({ key: devices.status, count: sql<number>`count(*)::int` })
          .from(devices)
          .groupBy(devices.status),
        this.db
          .select({ key: jobs.state, count: sql<number>`count(*)::int` })
          .from(jobs)
          .groupBy(jobs.state),
        this.db
          .select({
            key: sql<string>`coalesce(${hosts.agentVersion}, '')`,
            count: sql<number>`count(*)::int`,
          })
          .from(hosts)
          .where(eq(hosts.state, 'online'))
          .groupBy(hosts.agentVersion),
      ]);
      const toMap = (rows: { key: string; count: number }[]) =>
        new Map(rows.map((r) => [r.key, Number(r.count)]));
      return {
        hosts: toMap(hostRows),
        devices: toMap(deviceRows),
        jobs: toMap(jobRows),
        agentVersions: toMap(versionRows),
      };
    };
    // A database that does not answer (a dropped network, a connect timeout) must not hold the
    // scrape past Prometheus's own timeout: answer without the fleet gauges instead.
    try {
      return await withDeadline(read(), this.databaseTimeoutMs, 'the database');
    } catch (error) {
      this.logger.warn({ err: error }, 'metrics: reading the fleet counts failed');
      return null;
    }
  }

  private collectProcess(): void {
    const cpu = process.cpuUsage();
    // Counters only go up; cpuUsage is cumulative, so set them by adding the difference.
    const user = cpu.user / 1e6;
    const system = cpu.system / 1e6;
    this.cpuUser.inc({}, Math.max(0, user - this.cpuUser.get({})));
    this.cpuSystem.inc({}, Math.max(0, system - this.cpuSystem.get({})));
    this.cpuTotal.inc({}, Math.max(0, user + system - this.cpuTotal.get({})));
    const memory = process.memoryUsage();
    this.residentMemory.set({}, memory.rss);
    this.heapUsed.set({}, memory.heapUsed);
    this.heapTotal.set({}, memory.heapTotal);
    this.loopLagP99.set({}, this.loopDelay.percentile(99) / 1e9);
    this.loopDelay.reset();
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
