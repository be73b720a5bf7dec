// Agent versions and upgrades with the real server: the version each agent says in hello is stored
// on its host at once and compared with the version this server ships (an old one is flagged
// outdated in hosts.list, hosts.get and fleet.agentVersions); and restarting an agent (what an
// upgrade does: stop the old process, start the new one on the same state dir) leaves a device it
// bound through a job exactly as it was: not one file or link of the fixture's sysfs tree is
// written, which the kernel model would show as a changed mtime or target. On PGlite always, and
// on PostgreSQL with DATABASE_URL.
import { lstat, mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { devices, hosts, users } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { and, eq } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { CURRENT_AGENT_VERSION } from '../src/fleet/agent-version';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { type Actor, createJob, previewJob } from '../src/jobs/job-service';
import { type ApiClient, apiClient } from './helpers/api-client';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  hello,
  poll,
  RawClient,
  startAgent,
  startFleet,
} from './helpers/harness';

const PASSWORD = 'a long enough password';
const OPERATOR: Actor = { userId: null, username: 'test-operator', role: 'operator' };
/** mlx5-vf: a ConnectX-6 Dx VF alone in its IOMMU group, ready for mlx5_vfio_pci. */
const VF = '0000:41:00.2';

let tmp: string;
const agents: AgentProcess[] = [];
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-agent-upgrade-'));
});
afterEach(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/**
 * Every file and link under the tree's /sys: a link's target, a file's content, and the mtime of
 * both. Any sysfs write of the kernel model (bind, unbind, driver_override, drivers_probe, new
 * links) changes at least one of these.
 */
async function sysfsState(root: string): Promise<Map<string, string>> {
  const state = new Map<string, string>();
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const info = await lstat(full);
      const rel = path.relative(root, full);
      if (entry.isSymbolicLink()) {
        state.set(rel, `link ${await readlink(full)} ${info.mtimeMs}`);
      } else if (entry.isDirectory()) {
        state.set(rel, `dir ${info.mtimeMs}`);
        await walk(full);
      } else if (entry.isFile()) {
        state.set(rel, `file ${info.mtimeMs} ${await readFile(full, 'utf8')}`);
      }
    }
  };
  await walk(path.join(root, 'sys'));
  return state;
}

function diff(before: Map<string, string>, after: Map<string, string>): string[] {
  const changed: string[] = [];
  for (const [key, value] of before) if (after.get(key) !== value) changed.push(key);
  for (const key of after.keys()) if (!before.has(key)) changed.push(key);
  return changed;
}

describe.each(drivers)('agent versions and upgrades (%s)', (driver) => {
  let fleet: Fleet;
  let viewer: ApiClient;

  beforeAll(async () => {
    fleet = await startFleet(driver, {
      heartbeatSeconds: 1,
      offlineAfterSeconds: 3,
      jobs: { pollMs: 500, leaseSeconds: 10 },
    });
    await fleet.db
      .insert(users)
      .values({ username: 'vera', role: 'viewer', passwordHash: await hashPassword(PASSWORD) });
    viewer = apiClient(fleet.url);
    await viewer.api.auth.login.mutate({ username: 'vera', password: PASSWORD });
  }, 60_000);

  afterAll(async () => {
    await fleet?.close();
  });

  it('stores the version an agent says in hello and flags an old one as outdated', async () => {
    const { token } = await createEnrollmentToken(fleet.db, {
      label: 'old agent',
      ttlSeconds: 600,
      maxUses: 1,
    });
    const client = await RawClient.connect(fleet.wsUrl);
    try {
      client.send(
        hello(
          { kind: 'enroll', token },
          {
            agentVersion: '0.0.9',
            host: { hostname: 'old-agent', machineId: null, kernelRelease: null },
          },
        ),
      );
      const welcome = await client.next('welcome');
      const [row] = await fleet.db.select().from(hosts).where(eq(hosts.agentId, welcome.agentId));
      expect(row?.agentVersion).toBe('0.0.9');
      expect(row?.state).toBe('online');

      const list = await viewer.api.hosts.list.query({ search: 'old-agent' });
      expect(list.items).toHaveLength(1);
      expect(list.items[0]).toMatchObject({
        hostname: 'old-agent',
        agentVersion: '0.0.9',
        agentVersionStatus: 'outdated',
      });
      const detail = await viewer.api.hosts.get.query({ hostId: row?.id ?? '' });
      expect(detail).toMatchObject({ agentVersion: '0.0.9', agentVersionStatus: 'outdated' });
      const view = await viewer.api.hostView.get.query({ hostId: row?.id ?? '' });
      expect(view.agentVersionStatus).toBe('outdated');

      const versions = await viewer.api.fleet.agentVersions.query();
      expect(versions.current).toBe(CURRENT_AGENT_VERSION);
      expect(versions.outdated).toBeGreaterThanOrEqual(1);
      expect(versions.versions).toContainEqual({
        version: '0.0.9',
        status: 'outdated',
        hosts: 1,
        online: 1,
      });
      const metrics = await (await fetch(`${fleet.url}/metrics`)).text();
      expect(metrics).toContain('vfio_fleet_agents_online_by_version{version="0.0.9"} 1\n');
    } finally {
      client.close();
    }
  });

  it('restarting (upgrading) an agent never touches a binding it made', async () => {
    const root = path.join(tmp, driver, 'host');
    const stateDir = path.join(tmp, driver, 'state');
    await buildScenario(root, 'mlx5-vf');
    const args = [
      '--server',
      fleet.url,
      '--simulate',
      root,
      '--allow-rebind',
      '--interval',
      '1',
      '--state-dir',
      stateDir,
    ];
    const { token } = await createEnrollmentToken(fleet.db, {
      label: 'upgrade test',
      ttlSeconds: 600,
      maxUses: 1,
    });
    const first = startAgent([...args, '--token', token]);
    agents.push(first);
    const host = await poll(async () => {
      const rows = await fleet.db.select().from(hosts);
      return rows.find((r) => r.lastSeq !== null && r.hostname !== 'old-agent');
    }, 30_000);
    if (host === undefined) throw new Error(`the agent never reported: ${first.stderr()}`);
    expect(host.agentVersion).toBe(CURRENT_AGENT_VERSION);
    const listed = await viewer.api.hosts.list.query({ search: host.hostname });
    expect(listed.items[0]?.agentVersionStatus).toBe('current');

    // Bind the VF through a job, as an operator would.
    const untouched = await sysfsState(root);
    const preview = await previewJob(fleet.db, { hostId: host.id, address: VF, target: 'vfio' });
    expect(preview.ok, JSON.stringify(preview.refusal)).toBe(true);
    const job = await createJob(
      fleet.db,
      OPERATOR,
      {
        hostId: host.id,
        address: VF,
        target: 'vfio',
        force: preview.needsForce.length > 0,
        acknowledge: true,
        previewHash: preview.previewHash,
      },
      (id) => fleet.server.dispatcher.wake(id),
    );
    const storedDriver = async () => {
      const [row] = await fleet.db
        .select({ driver: devices.driver })
        .from(devices)
        .where(and(eq(devices.hostId, host.id), eq(devices.address, VF)));
      return row?.driver ?? null;
    };
    const bound = await poll(
      async () => ((await storedDriver()) === 'mlx5_vfio_pci' ? true : undefined),
      60_000,
    );
    expect(bound, `job ${job.id}: ${first.stderr()}`).toBe(true);
    // The tree walk sees the kernel model's writes (so an empty diff below means something).
    expect(diff(untouched, await sysfsState(root)).length).toBeGreaterThan(0);
    const vfDir = path.join(root, 'sys/bus/pci/devices', VF);
    expect(path.basename(await readlink(path.join(vfDir, 'driver')))).toBe('mlx5_vfio_pci');
    const override = (await readFile(path.join(vfDir, 'driver_override'), 'utf8')).trim();

    // Stop the agent as systemd would (SIGTERM), take the tree, and start it again (an upgrade
    // installs a new binary in between) on the same state dir, without a token.
    const [before] = await fleet.db.select().from(hosts).where(eq(hosts.id, host.id));
    expect(await first.kill('SIGTERM')).toBe(0);
    const tree = await sysfsState(root);
    const second = startAgent(args);
    agents.push(second);
    const reconnected = await poll(async () => {
      const [row] = await fleet.db.select().from(hosts).where(eq(hosts.id, host.id));
      return row?.state === 'online' &&
        row.connectedAt !== null &&
        before?.connectedAt !== null &&
        before?.connectedAt !== undefined &&
        row.connectedAt > before.connectedAt
        ? row
        : undefined;
    }, 30_000);
    expect(reconnected, second.stderr()).toBeDefined();
    expect(reconnected?.agentVersion).toBe(CURRENT_AGENT_VERSION);
    // A few scan intervals of the new process: it has read the host and reported, and done
    // anything it would do on its own.
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    expect(second.child.exitCode).toBeNull();

    expect(diff(tree, await sysfsState(root))).toEqual([]);
    expect(path.basename(await readlink(path.join(vfDir, 'driver')))).toBe('mlx5_vfio_pci');
    expect((await readFile(path.join(vfDir, 'driver_override'), 'utf8')).trim()).toBe(override);
    expect(await storedDriver()).toBe('mlx5_vfio_pci');
    // The agent's own log agrees: no job, no kernel write after the restart.
    expect(second.stderr()).not.toMatch(/"msg":"job accepted"/);
  }, 150_000);
});
