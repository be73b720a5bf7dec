// hostView.get end to end: real agents (--simulate over fixture trees) report to the real server on
// port 0; the host page's query must return, per device, the vfio selection the agent's own
// `scan --json` computed (module, driver, source, candidates, explanation), on PGlite and, with
// DATABASE_URL, PostgreSQL. The HTTP half needs `hostView` mounted in src/api/root.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { users } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { getHostView } from '../src/fleet/host-view';
import { type ApiClient, apiClient, failure } from './helpers/api-client';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  scanJson,
  startAgent,
  startFleet,
} from './helpers/harness';

const PASSWORD = 'a long enough password';
const SCENARIOS = ['mlx5-vf', 'iommu-off'] as const;
type ScenarioName = (typeof SCENARIOS)[number];

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-host-view-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('hostView.get (%s)', (driver) => {
  let fleet: Fleet;
  let viewer: ApiClient;
  const agents: AgentProcess[] = [];
  const snapshots = new Map<ScenarioName, HostSnapshot>();
  const hostIds = new Map<ScenarioName, string>();

  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1, offlineAfterSeconds: 5 });
    await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
    await fleet.db
      .insert(users)
      .values({ username: 'vic', role: 'viewer', passwordHash: await hashPassword(PASSWORD) });
    const admin = apiClient(fleet.url);
    await admin.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
    viewer = apiClient(fleet.url);
    await viewer.api.auth.login.mutate({ username: 'vic', password: PASSWORD });
    const { token } = await admin.api.tokens.create.mutate({
      label: 'host view',
      ttlHours: 1,
      maxUses: SCENARIOS.length,
    });
    for (const name of SCENARIOS) {
      const root = path.join(tmp, driver, name, 'host');
      await buildScenario(root, name);
      snapshots.set(name, scanJson(root) as HostSnapshot);
      agents.push(
        startAgent([
          '--server',
          fleet.url,
          '--token',
          token,
          '--simulate',
          root,
          '--interval',
          '1',
          '--state-dir',
          path.join(tmp, driver, name, 'state'),
          '--label',
          `scenario=${name}`,
        ]),
      );
    }
    const listed = await poll(async () => {
      const page = await viewer.api.hosts.list.query({ limit: 200 });
      const complete = SCENARIOS.every((name) =>
        page.items.some(
          (h) =>
            h.labels.scenario === name && h.devices.total === snapshots.get(name)?.devices.length,
        ),
      );
      return complete ? page : undefined;
    }, 60_000);
    if (listed === undefined) throw new Error('the agents did not all report in');
    for (const host of listed.items) hostIds.set(host.labels.scenario as ScenarioName, host.id);
  }, 180_000);

  afterAll(async () => {
    for (const agent of agents.splice(0)) await agent.kill();
    await fleet?.close();
  });

  function hostId(name: ScenarioName): string {
    const id = hostIds.get(name);
    if (id === undefined) throw new Error(`no host for ${name}`);
    return id;
  }

  it("carries each device's vfio selection exactly as the agent's scan computed it", async () => {
    const view = await getHostView(fleet.db, hostId('mlx5-vf'));
    const snapshot = snapshots.get('mlx5-vf');
    if (snapshot === undefined) throw new Error('no snapshot');
    const devices = view.groups.flatMap((g) => g.devices);
    expect(devices.map((d) => d.address).sort()).toEqual(
      snapshot.devices.map((d) => d.address).sort(),
    );
    for (const expected of snapshot.devices) {
      const got = devices.find((d) => d.address === expected.address);
      expect(got?.vfio).toEqual(expected.vfio);
      expect(got?.driverOverride).toBe(expected.driverOverride);
      expect(got?.netInterfaces).toEqual(expected.netInterfaces);
    }
    // The ConnectX VF's variant driver won by alias, with its candidates listed: the "why".
    const variant = devices.find((d) => d.vfio?.module === 'mlx5_vfio_pci');
    expect(variant?.vfio?.source).toBe('alias');
    expect(variant?.vfio?.candidates.length ?? 0).toBeGreaterThan(0);
    expect(variant?.vfio?.explanation).toMatch(/mlx5_vfio_pci/);
    // Grouping and the rest of hosts.get are unchanged.
    for (const group of view.groups) {
      for (const device of group.devices) expect(device.iommuGroup).toBe(group.group);
    }
  });

  it('puts the devices of a host without IOMMU groups in the group null', async () => {
    const view = await getHostView(fleet.db, hostId('iommu-off'));
    expect(view.iommuEnabled).toBe(false);
    expect(view.groups.map((g) => g.group)).toEqual([null]);
    expect(view.groups[0]?.devices.every((d) => d.status === 'blocked')).toBe(true);
  });

  it('is served over HTTP to a viewer, and refused without a session', async () => {
    const id = hostId('mlx5-vf');
    const got = await viewer.api.hostView.get.query({ hostId: id });
    expect(got).toEqual(JSON.parse(JSON.stringify(await getHostView(fleet.db, id))));
    const anonymous = await failure(apiClient(fleet.url).api.hostView.get.query({ hostId: id }));
    expect(anonymous.code).toBe('UNAUTHORIZED');
    const unknown = await failure(
      viewer.api.hostView.get.query({
        hostId: '00000000-0000-4000-8000-000000000000',
      }),
    );
    expect(unknown.code).toBe('NOT_FOUND');
  });
});
