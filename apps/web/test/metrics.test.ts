// GET /metrics on the real server with a real agent: the fleet gauges read from the database
// (every state, zeros included), the gateway's counters and ingest histogram, process metrics,
// the optional bearer token, the scrape cache, and an answer (database_up 0) when the database is
// gone. Plus the text format itself (escaping, cumulative histogram buckets).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEVICE_STATUSES, devices, HOST_STATES, hosts, JOB_STATES } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { createLogger } from '../src/logger';
import { FleetMetrics } from '../src/ops/metrics';
import { Counter, Histogram, PROMETHEUS_CONTENT_TYPE, Registry } from '../src/ops/prometheus';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  startAgent,
  startFleet,
} from './helpers/harness';
import { parseSamples, scrape } from './helpers/scrape';

let tmp: string;
const agents: AgentProcess[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-metrics-'));
});
afterAll(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
  await rm(tmp, { recursive: true, force: true });
});

describe('the Prometheus text format', () => {
  it('escapes label values and renders cumulative histogram buckets', () => {
    const registry = new Registry();
    const counter = registry.register(new Counter('c_total', 'a\nhelp', ['l']));
    counter.inc({ l: 'say "hi"\\\n' }, 2);
    const histogram = registry.register(new Histogram('h_seconds', 'h', ['k'], [0.1, 1]));
    histogram.observe({ k: 'a' }, 0.05);
    histogram.observe({ k: 'a' }, 0.5);
    histogram.observe({ k: 'a' }, 5);
    expect(registry.render()).toBe(
      [
        '# HELP c_total a\\nhelp',
        '# TYPE c_total counter',
        'c_total{l="say \\"hi\\"\\\\\\n"} 2',
        '# HELP h_seconds h',
        '# TYPE h_seconds histogram',
        'h_seconds_bucket{k="a",le="0.1"} 1',
        'h_seconds_bucket{k="a",le="1"} 2',
        'h_seconds_bucket{k="a",le="+Inf"} 3',
        'h_seconds_sum{k="a"} 5.55',
        'h_seconds_count{k="a"} 3',
        '',
      ].join('\n'),
    );
    expect(() => counter.inc({ l: 'x' }, -1)).toThrow();
    expect(() => registry.register(new Counter('c_total', 'again'))).toThrow();
  });
});

describe.each(drivers)('GET /metrics (%s)', (driver) => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1 });
  });
  afterAll(async () => {
    for (const agent of agents.splice(0)) await agent.kill();
    await fleet.close();
  });

  it('exports the fleet from the database and what the gateway saw', async () => {
    const root = path.join(tmp, `host-${driver}`);
    await buildScenario(root, 'dual-gpu');
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600, maxUses: 1 });
    const agent = startAgent([
      '--server',
      fleet.url,
      '--simulate',
      root,
      '--interval',
      '1',
      '--state-dir',
      path.join(tmp, `state-${driver}`),
      '--token',
      token,
    ]);
    agents.push(agent);

    // Fresh scrapes until the snapshot is in: the database gauges are cached for 2 s, so a scrape
    // right after the ingest may still carry the devices gauges read before it committed.
    const scraped = await poll(async () => {
      const got = await scrape(fleet.url);
      return got.samples.get('vfio_fleet_hosts{state="online"}') === 1 &&
        (got.samples.get('vfio_fleet_ingest_seconds_count{kind="snapshot"}') ?? 0) >= 1 &&
        (got.samples.get('vfio_fleet_devices{status="blocked"}') ?? 0) > 0
        ? got
        : undefined;
    }, 30_000);
    expect(scraped, agent.stderr()).toBeDefined();
    if (scraped === undefined) return;
    const { samples, text } = scraped;

    const res = await fetch(`${fleet.url}/metrics`);
    expect(res.headers.get('content-type')).toBe(PROMETHEUS_CONTENT_TYPE);
    await res.text();

    // The device gauges agree with the rows, status by status; every state is there, zeros too.
    const rows = await fleet.db
      .select({ status: devices.status, count: sql<number>`count(*)::int` })
      .from(devices)
      .groupBy(devices.status);
    for (const status of DEVICE_STATUSES) {
      expect(samples.get(`vfio_fleet_devices{status="${status}"}`), status).toBe(
        rows.find((r) => r.status === status)?.count ?? 0,
      );
    }
    expect(samples.get('vfio_fleet_devices{status="ready"}')).toBeGreaterThan(0);
    expect(samples.get('vfio_fleet_devices{status="blocked"}')).toBeGreaterThan(0);
    for (const state of HOST_STATES)
      expect(samples.has(`vfio_fleet_hosts{state="${state}"}`)).toBe(true);
    for (const state of JOB_STATES)
      expect(samples.get(`vfio_fleet_jobs{state="${state}"}`)).toBe(0);
    expect(samples.get('vfio_fleet_database_up')).toBe(1);
    expect(samples.get('vfio_fleet_agents_connected')).toBe(1);
    expect(samples.get('vfio_fleet_agent_messages_total{type="hello",result="ok"}')).toBe(1);
    expect(samples.get('vfio_fleet_agent_messages_total{type="snapshot",result="ok"}')).toBe(1);
    const deviceRows = rows.reduce((sum, r) => sum + r.count, 0);
    expect(samples.get('vfio_fleet_ingest_devices_written_total')).toBe(deviceRows);
    expect(samples.get('vfio_fleet_ingest_seconds_bucket{kind="snapshot",le="+Inf"}')).toBe(1);
    expect(samples.get('vfio_fleet_ingest_seconds_count{kind="delta"}')).toBe(0);
    expect(samples.get('vfio_fleet_agent_auth_failures_total')).toBe(0);
    expect(samples.get('vfio_fleet_agent_rate_limited_total{limit="frames"}')).toBe(0);
    expect(samples.get('process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(samples.get('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(text).toContain('# TYPE vfio_fleet_ingest_seconds histogram');

    // Pings every second are counted as they come.
    const pinged = await poll(async () => {
      const n = (await scrape(fleet.url)).samples.get(
        'vfio_fleet_agent_messages_total{type="ping",result="ok"}',
      );
      return n !== undefined && n >= 2 ? n : undefined;
    }, 15_000);
    expect(pinged).toBeDefined();

    // Killed: the host goes offline and the gauges follow.
    await agent.kill();
    const offline = await poll(async () => {
      const got = await scrape(fleet.url);
      return got.samples.get('vfio_fleet_hosts{state="offline"}') === 1 ? got : undefined;
    }, 15_000);
    expect(offline?.samples.get('vfio_fleet_hosts{state="online"}')).toBe(0);
    expect(offline?.samples.get('vfio_fleet_agents_connected')).toBe(0);
  });

  it('reads the database once per cache period, however many scrapes', async () => {
    const metrics = new FleetMetrics({
      db: fleet.db,
      logger: createLogger('silent'),
      agentsConnected: () => 0,
      cacheMs: 60_000,
    });
    try {
      const first = parseSamples(await metrics.render());
      const offline = first.get('vfio_fleet_hosts{state="offline"}') ?? 0;
      await fleet.db.insert(hosts).values({ agentId: `cache-${driver}`, hostname: 'cached' });
      // Within the cache period the count is the one read before the insert...
      expect(parseSamples(await metrics.render()).get('vfio_fleet_hosts{state="offline"}')).toBe(
        offline,
      );
      // ...and a reader with no cache sees it at once.
      const fresh = new FleetMetrics({
        db: fleet.db,
        logger: createLogger('silent'),
        agentsConnected: () => 0,
        cacheMs: 0,
      });
      expect(parseSamples(await fresh.render()).get('vfio_fleet_hosts{state="offline"}')).toBe(
        offline + 1,
      );
      fresh.close();
    } finally {
      metrics.close();
    }
  });

  it('still answers with the in-process metrics and database_up 0 when the database is gone', async () => {
    await fleet.handle.close();
    const down = await poll(async () => {
      const got = await scrape(fleet.url);
      return got.samples.get('vfio_fleet_database_up') === 0 ? got : undefined;
    }, 15_000);
    expect(down?.status).toBe(200);
    // No stale fleet numbers: the database series are absent, the gateway's are there.
    expect(down?.samples.has('vfio_fleet_hosts{state="online"}')).toBe(false);
    expect(down?.samples.get('vfio_fleet_agent_messages_total{type="hello",result="ok"}')).toBe(1);
    expect(down?.samples.has('vfio_fleet_agents_connected')).toBe(true);
  });
});

describe('GET /metrics with METRICS_TOKEN', () => {
  let fleet: Fleet;
  beforeAll(async () => {
    fleet = await startFleet('pglite', { metricsToken: 's3cret-token' });
  });
  afterAll(async () => {
    await fleet.close();
  });

  it('needs the bearer token', async () => {
    expect((await scrape(fleet.url)).status).toBe(401);
    expect((await scrape(fleet.url, 'wrong')).status).toBe(401);
    const ok = await scrape(fleet.url, 's3cret-token');
    expect(ok.status).toBe(200);
    expect(ok.samples.get('vfio_fleet_database_up')).toBe(1);
    // The token guards /metrics only.
    expect((await fetch(`${fleet.url}/api/health`)).status).toBe(200);
  });
});
