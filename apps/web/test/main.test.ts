// The entry point as a real process: env parsing, migrations on start, /api/health, and a clean
// exit on SIGTERM. PGlite in a temporary data directory (main reads the same env a user sets).
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServerEnv } from '../src/env';
import { ServerError } from '../src/errors';
import type { Health } from '../src/server';
import { poll, scanJson } from './helpers/harness';
import { startMain } from './helpers/main-process';
import { scrape } from './helpers/scrape';

let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-main-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('main.ts', () => {
  it('migrates, serves /api/health and exits 0 on SIGTERM', async () => {
    const { child, output } = startMain({
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_DATA_DIR: path.join(tmp, 'data'),
      VFIO_FLEET_LOCAL_AGENT: '0',
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const url = await poll(() => /"url":"(http:[^"]+)"/.exec(output())?.[1], 30_000);
      expect(url, output()).toBeDefined();
      const res = await fetch(`${url}/api/health`);
      expect(res.status).toBe(200);
      expect((await res.json()) as Health).toEqual({
        ok: true,
        database: 'up',
        hosts: { online: 0, offline: 0 },
        agents: 0,
      });
      child.kill('SIGTERM');
      expect(await exited, output()).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('exits 1 with a clear message on a bad environment', async () => {
    const { child, output } = startMain({ PORT: 'eighty' });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    expect(output()).toContain('PORT');
  });

  it('parses the environment with defaults', () => {
    expect(parseServerEnv({})).toMatchObject({
      PORT: 3000,
      HOST: '0.0.0.0',
      VFIO_FLEET_LOG_LEVEL: 'info',
      VFIO_FLEET_HEARTBEAT_SECONDS: 30,
      VFIO_FLEET_TRUST_PROXY: '0',
      VFIO_FLEET_LOCAL_AGENT: '1',
    });
    expect(parseServerEnv({}).METRICS_TOKEN).toBeUndefined();
    expect(() => parseServerEnv({ METRICS_TOKEN: 'short' })).toThrow(ServerError);
    expect(() => parseServerEnv({ VFIO_FLEET_LOCAL_AGENT: 'yes' })).toThrow(ServerError);
    expect(() => parseServerEnv({ VFIO_FLEET_HEARTBEAT_SECONDS: '0' })).toThrow(ServerError);
  });

  it('runs a read-only local agent for this host, stops it on SIGTERM, and re-enrolls it when the database was wiped', async () => {
    const root = path.join(tmp, 'local-host');
    await buildScenario(root, 'dual-gpu');
    const scanned = scanJson(root) as { devices: { readiness: { status: string } }[] };
    const expected = (status: string) =>
      scanned.devices.filter((d) => d.readiness.status === status).length;
    const dataDir = path.join(tmp, 'local-data');
    const env = {
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_DATA_DIR: dataDir,
      VFIO_FLEET_LOCAL_AGENT_ROOT: root,
      VFIO_FLEET_UI: '0',
    };

    /** Starts main, waits for the local agent's host online; returns it and the agent's pid. */
    async function run() {
      const main = startMain(env);
      const exited = new Promise<number | null>((resolve) => main.child.once('exit', resolve));
      const url = await poll(() => /"url":"(http:[^"]+)"/.exec(main.output())?.[1], 30_000);
      expect(url, main.output()).toBeDefined();
      const health = await poll(async () => {
        const body = (await (await fetch(`${url}/api/health`)).json()) as Health;
        return body.hosts.online === 1 && body.agents === 1 ? body : undefined;
      }, 60_000);
      expect(health, main.output()).toBeDefined();
      const agentPid = Number(/"agentPid":(\d+)/.exec(main.output())?.[1]);
      expect(agentPid).toBeGreaterThan(0);
      return { main, exited, url: url ?? '', agentPid };
    }
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };

    const first = await run();
    try {
      const metrics = await poll(async () => {
        const got = await scrape(first.url);
        return (got.samples.get('vfio_fleet_devices{status="blocked"}') ?? 0) > 0 ? got : undefined;
      }, 30_000);
      expect(metrics?.samples.get('vfio_fleet_hosts{state="online"}')).toBe(1);
      for (const status of ['bound', 'ready', 'blocked']) {
        expect(metrics?.samples.get(`vfio_fleet_devices{status="${status}"}`), status).toBe(
          expected(status),
        );
      }
      // Its log lines are the server's, tagged; and it enrolled without being asked to rebind.
      expect(first.main.output()).toContain('"component":"local-agent"');
      expect(first.main.output()).toContain('"allowRebind":false');
      first.main.child.kill('SIGTERM');
      expect(await first.exited, first.main.output()).toBe(0);
      expect(await poll(() => (alive(first.agentPid) ? undefined : true), 10_000)).toBe(true);
    } finally {
      first.main.child.kill('SIGKILL');
    }

    // The database is wiped but the agent's state dir kept: its credential is refused (exit 3),
    // dropped, and the agent enrolls again as a new host.
    for (const entry of await readdir(dataDir)) {
      if (entry !== 'local-agent')
        await rm(path.join(dataDir, entry), { recursive: true, force: true });
    }
    const second = await run();
    try {
      expect(second.main.output()).toContain('enrolling it again');
      second.main.child.kill('SIGTERM');
      expect(await second.exited, second.main.output()).toBe(0);
    } finally {
      second.main.child.kill('SIGKILL');
    }
  });
});
