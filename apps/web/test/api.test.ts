// The tRPC API end to end: the real server on port 0, real agents (child processes, --simulate over
// fixture trees) enrolled with a token made through tokens.create, and a real HTTP tRPC client, on
// PGlite and, with DATABASE_URL, PostgreSQL. Expected numbers are computed here from the agents'
// own `scan --json` snapshots of the same trees, never by re-running the server's SQL.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { users } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
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
type ScenarioName = 'dual-gpu' | 'mlx5-vf' | 'vfio-bound';
const SCENARIOS: { name: ScenarioName; rack: string }[] = [
  { name: 'dual-gpu', rack: 'a' },
  { name: 'mlx5-vf', rack: 'a' },
  { name: 'vfio-bound', rack: 'b' },
];

let tmp: string;
const agents: AgentProcess[] = [];
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-api-'));
});
afterAll(async () => {
  for (const agent of agents.splice(0)) await agent.kill();
  await rm(tmp, { recursive: true, force: true });
});

type Device = HostSnapshot['devices'][number];

/** The capacity rule, restated independently: the bound driver is vfio-pci or a *_vfio_pci variant. */
function onVfio(d: Device): boolean {
  return d.driver !== null && (/^vfio/.test(d.driver) || /vfio[-_]pci$/.test(d.driver));
}

function countBy<T>(items: readonly T[], key: (item: T) => string | null): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) {
    const k = key(item);
    if (k !== null) counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

function expectedCapacity(devices: readonly Device[]) {
  const types = new Map<
    string,
    { total: number; bound: number; ready: number; blocked: number; vfHeadroom: number }
  >();
  for (const d of devices) {
    const key = `${d.vendorId}:${d.deviceId}`;
    const t = types.get(key) ?? { total: 0, bound: 0, ready: 0, blocked: 0, vfHeadroom: 0 };
    t.total += 1;
    if (onVfio(d)) t.bound += 1;
    if (d.readiness.status === 'ready') t.ready += 1;
    if (d.readiness.status === 'blocked') t.blocked += 1;
    if (d.sriov !== null) t.vfHeadroom += Math.max(0, d.sriov.totalVfs - d.sriov.numVfs);
    types.set(key, t);
  }
  return types;
}

describe.each(drivers)('tRPC API (%s)', (driver) => {
  let fleet: Fleet;
  let admin: ApiClient;
  let operator: ApiClient;
  let viewer: ApiClient;
  const snapshots = new Map<ScenarioName, HostSnapshot>();
  const hostIds = new Map<ScenarioName, string>();
  const running = new Map<ScenarioName, AgentProcess>();
  let command = '';

  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1, offlineAfterSeconds: 5 });
    for (const [username, role] of [
      ['ada', 'admin'],
      ['oscar', 'operator'],
      ['vic', 'viewer'],
    ] as const) {
      await fleet.db
        .insert(users)
        .values({ username, role, passwordHash: await hashPassword(PASSWORD) });
    }
    const login = async (username: string) => {
      const client = apiClient(fleet.url);
      await client.api.auth.login.mutate({ username, password: PASSWORD });
      return client;
    };
    admin = await login('ada');
    operator = await login('oscar');
    viewer = await login('vic');

    const created = await admin.api.tokens.create.mutate({
      label: 'api test',
      ttlHours: 1,
      maxUses: 3,
    });
    command = created.command;
    const [, token, server] =
      /^VFIO_FLEET_TOKEN=(\S+) vfio-fleet-agent run --server (\S+)$/.exec(command) ?? [];
    if (server === undefined || token === undefined)
      throw new Error(`unexpected command ${command}`);
    for (const { name, rack } of SCENARIOS) {
      const root = path.join(tmp, driver, name, 'host');
      await buildScenario(root, name);
      snapshots.set(name, scanJson(root) as HostSnapshot);
      const agent = startAgent([
        '--server',
        server,
        '--token',
        token,
        '--simulate',
        root,
        '--allow-rebind',
        '--interval',
        '1',
        '--state-dir',
        path.join(tmp, driver, name, 'state'),
        '--label',
        `rack=${rack}`,
        '--label',
        `scenario=${name}`,
      ]);
      agents.push(agent);
      running.set(name, agent);
    }
    // Every agent enrolled and its inventory stored.
    const listed = await poll(async () => {
      const page = await viewer.api.hosts.list.query({ limit: 200 });
      const complete = SCENARIOS.every(({ name }) =>
        page.items.some(
          (h) =>
            h.labels.scenario === name && h.devices.total === snapshots.get(name)?.devices.length,
        ),
      );
      return complete ? page : undefined;
    }, 30_000);
    if (listed === undefined) throw new Error('the agents did not all report in');
    for (const host of listed.items) hostIds.set(host.labels.scenario as ScenarioName, host.id);
  }, 120_000);

  afterAll(async () => {
    for (const agent of running.values()) await agent.kill();
    await fleet?.close();
  });

  const allDevices = () => [...snapshots.values()].flatMap((s) => s.devices);

  it('tokens.create printed the agent command for this server, and the agents enrolled with it', async () => {
    expect(command).toMatch(
      new RegExp(`^VFIO_FLEET_TOKEN=[A-Za-z0-9_-]{43} vfio-fleet-agent run --server ${fleet.url}$`),
    );
    const tokens = await admin.api.tokens.list.query({});
    expect(tokens.items).toHaveLength(1);
    expect(tokens.items[0]).toMatchObject({
      label: 'api test',
      uses: 3,
      maxUses: 3,
      state: 'used-up',
      createdBy: 'ada',
    });
    // The token itself is never listed.
    const secret = /VFIO_FLEET_TOKEN=(\S+)/.exec(command)?.[1] ?? '';
    expect(JSON.stringify(tokens)).not.toContain(secret);
    const hosts = await viewer.api.hosts.list.query({});
    expect(hosts.items.map((h) => h.state)).toEqual(['online', 'online', 'online']);
  });

  it('fleet.summary: hosts, devices by status and the top blocking reasons of the snapshots', async () => {
    const devices = allDevices();
    const summary = await viewer.api.fleet.summary.query({});
    expect(summary.hosts).toEqual({ online: 3, offline: 0, total: 3 });
    const byStatus = countBy(devices, (d) => d.readiness.status);
    expect(summary.devices).toEqual({
      inUse: byStatus.get('in-use') ?? 0,
      bound: byStatus.get('bound') ?? 0,
      ready: byStatus.get('ready') ?? 0,
      blocked: byStatus.get('blocked') ?? 0,
      total: devices.length,
    });
    const reasons = countBy(
      devices.filter((d) => d.readiness.status === 'blocked'),
      (d) => d.readiness.reasons[0]?.code ?? null,
    );
    expect(new Map(summary.topBlockingReasons.map((r) => [r.code, r.count]))).toEqual(reasons);
    for (const reason of summary.topBlockingReasons) expect(reason.message).toBeTruthy();

    const rackA = await viewer.api.fleet.summary.query({ labels: { rack: 'a' } });
    expect(rackA.hosts.total).toBe(2);
    expect(rackA.devices.total).toBe(
      (snapshots.get('dual-gpu')?.devices.length ?? 0) +
        (snapshots.get('mlx5-vf')?.devices.length ?? 0),
    );
  });

  it('fleet.capacity: per type total, bound to vfio, ready, blocked and VF headroom; by label and NUMA', async () => {
    const expected = expectedCapacity(allDevices());
    const capacity = await viewer.api.fleet.capacity.query({});
    expect(
      new Map(
        capacity.types.map((t) => [
          `${t.vendorId}:${t.deviceId}`,
          {
            total: t.total,
            bound: t.bound,
            ready: t.ready,
            blocked: t.blocked,
            vfHeadroom: t.vfHeadroom,
          },
        ]),
      ),
    ).toEqual(expected);
    // The scenarios' facts this relies on: GPUs on vfio-pci in one, an SR-IOV PF with VFs in another.
    expect(capacity.types.find((t) => t.vendorId === '10de' && t.deviceId === '2204')?.bound).toBe(
      1,
    );
    expect(capacity.totals.vfHeadroom).toBeGreaterThan(0);
    // The fixtures carry no pci.ids: the class name comes from core's built-in table.
    expect(capacity.types.find((t) => t.vendorId === '10de')?.className).toBeTruthy();

    const rackA = await viewer.api.fleet.capacity.query({ labels: { rack: 'a' } });
    const expectedA = expectedCapacity([
      ...(snapshots.get('dual-gpu')?.devices ?? []),
      ...(snapshots.get('mlx5-vf')?.devices ?? []),
    ]);
    expect(rackA.totals.total).toBe([...expectedA.values()].reduce((n, t) => n + t.total, 0));
    expect(rackA.types.find((t) => t.vendorId === '10de' && t.deviceId === '2204')?.bound).toBe(0);

    const oneHost = await viewer.api.fleet.capacity.query({
      hostIds: [hostIds.get('mlx5-vf') ?? ''],
    });
    expect(oneHost.totals.total).toBe(snapshots.get('mlx5-vf')?.devices.length);

    const byNuma = await viewer.api.fleet.capacity.query({ groupBy: 'numa' });
    for (const type of byNuma.types) {
      const nodes = type.byNuma ?? [];
      expect(nodes.reduce((n, node) => n + node.total, 0)).toBe(type.total);
      const numa = countBy(
        allDevices().filter(
          (d) => `${d.vendorId}:${d.deviceId}` === `${type.vendorId}:${type.deviceId}`,
        ),
        (d) => String(d.numaNode),
      );
      expect(new Map(nodes.map((n) => [String(n.numaNode), n.total]))).toEqual(numa);
    }
  });

  it('hosts.list pages every host once in each order; hosts.get and groups.get show groups and reasons', async () => {
    // lastSeen is left out of the exactly-once walk: live agents' pings move hosts in that order
    // between two page requests (as they would for a user paging it); its order is checked below.
    for (const sort of ['hostname', 'devices'] as const) {
      for (const dir of ['asc', 'desc'] as const) {
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const page: Awaited<ReturnType<typeof viewer.api.hosts.list.query>> =
            await viewer.api.hosts.list.query({ sort, dir, limit: 1, cursor });
          seen.push(...page.items.map((h) => h.id));
          cursor = page.nextCursor;
        } while (cursor !== null);
        expect(seen.sort(), `${sort} ${dir}`).toEqual([...hostIds.values()].sort());
      }
    }
    const byDevices = await viewer.api.hosts.list.query({ sort: 'devices', dir: 'desc' });
    const totals = byDevices.items.map((h) => h.devices.total);
    expect(totals).toEqual([...totals].sort((a, b) => b - a));
    const recent = await viewer.api.hosts.list.query({ sort: 'lastSeen', dir: 'desc' });
    const seenAt = recent.items.map((h) => h.lastSeenAt ?? '');
    expect(seenAt).toEqual([...seenAt].sort().reverse());
    expect(recent.items).toHaveLength(3);
    const rackB = await viewer.api.hosts.list.query({ labels: { rack: 'b' } });
    expect(rackB.items.map((h) => h.id)).toEqual([hostIds.get('vfio-bound')]);

    const dual = snapshots.get('dual-gpu');
    const host = await viewer.api.hosts.get.query({ hostId: hostIds.get('dual-gpu') ?? '' });
    expect(host.labels).toEqual({ rack: 'a', scenario: 'dual-gpu' });
    expect(host.devices.total).toBe(dual?.devices.length);
    expect(host.groups.flatMap((g) => g.devices.map((d) => d.address)).sort()).toEqual(
      dual?.devices.map((d) => d.address).sort(),
    );
    const gpu = dual?.devices.find((d) => d.vendorId === '10de' && d.deviceId === '2204');
    const group = await viewer.api.groups.get.query({
      hostId: host.id,
      group: gpu?.iommuGroup ?? -1,
    });
    expect(group.devices.map((d) => d.address).sort()).toEqual(
      dual?.devices
        .filter((d) => d.iommuGroup === gpu?.iommuGroup)
        .map((d) => d.address)
        .sort(),
    );
    expect(group.devices.find((d) => d.address === gpu?.address)?.reasons).toEqual(
      gpu?.readiness.reasons,
    );
    expect(group.activeJob).toBeNull();
    expect(
      await failure(viewer.api.hosts.get.query({ hostId: '00000000-0000-4000-8000-000000000000' })),
    ).toMatchObject({ code: 'NOT_FOUND', status: 404 });
  });

  it('devices.search returns every row exactly once across pages, and filters', async () => {
    const expected = [...snapshots.entries()].flatMap(([name, s]) =>
      s.devices.map((d) => `${hostIds.get(name)}/${d.address}`),
    );
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: Awaited<ReturnType<typeof viewer.api.devices.search.query>> =
        await viewer.api.devices.search.query({ limit: 4, cursor });
      expect(page.items.length).toBeLessThanOrEqual(4);
      seen.push(...page.items.map((d) => `${d.hostId}/${d.address}`));
      cursor = page.nextCursor;
    } while (cursor !== null);
    expect(seen).toHaveLength(expected.length);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort()).toEqual([...expected].sort());

    const devices = allDevices();
    const nvidia = await viewer.api.devices.search.query({ q: '10de:', limit: 200 });
    expect(nvidia.items).toHaveLength(devices.filter((d) => d.vendorId === '10de').length);
    const ready = await viewer.api.devices.search.query({ status: 'ready', limit: 200 });
    expect(ready.items).toHaveLength(devices.filter((d) => d.readiness.status === 'ready').length);
    const display = await viewer.api.devices.search.query({ classPrefix: '03', limit: 200 });
    expect(display.items).toHaveLength(devices.filter((d) => d.classCode.startsWith('03')).length);
    const onVfioPci = await viewer.api.devices.search.query({
      driver: 'vfio-pci',
      labels: { rack: 'b' },
      limit: 200,
    });
    expect(onVfioPci.items).toHaveLength(
      snapshots.get('vfio-bound')?.devices.filter((d) => d.driver === 'vfio-pci').length ?? -1,
    );
    const byAddress = await viewer.api.devices.search.query({
      q: devices[0]?.address ?? '',
      limit: 200,
    });
    expect(byAddress.items.length).toBeGreaterThan(0);
  });

  it('answers invalid input with BAD_REQUEST naming the field', async () => {
    expect(await failure(viewer.api.devices.search.query({ limit: 1000 }))).toMatchObject({
      code: 'BAD_REQUEST',
      status: 400,
      fields: ['limit'],
    });
    const badId = await failure(viewer.api.hosts.get.query({ hostId: 'not-a-uuid' }));
    expect(badId).toMatchObject({ code: 'BAD_REQUEST', fields: ['hostId'] });
    expect(badId.message).toMatch(/hostId/);
    expect(await failure(viewer.api.devices.search.query({ vendorId: 'xyz' }))).toMatchObject({
      code: 'BAD_REQUEST',
      fields: ['vendorId'],
    });
    expect(await failure(viewer.api.devices.search.query({ cursor: 'garbage' }))).toMatchObject({
      code: 'BAD_REQUEST',
      message: 'invalid cursor: pass back the nextCursor of the previous page, unchanged',
    });
  });

  it('jobs: an operator previews and creates a job, the agent runs it, audit.list shows it', async () => {
    const dual = snapshots.get('dual-gpu');
    const gpu = dual?.devices.find((d) => d.vendorId === '10de' && d.readiness.status === 'ready');
    const hostId = hostIds.get('dual-gpu') ?? '';
    const input = { hostId, address: gpu?.address ?? '', target: 'vfio' as const };
    const preview = await operator.api.jobs.preview.query(input);
    expect(preview.ok).toBe(true);
    expect(
      await failure(
        operator.api.jobs.create.mutate({ ...input, acknowledge: true, previewHash: 'stale' }),
      ),
    ).toMatchObject({ code: 'CONFLICT' });
    const job = await operator.api.jobs.create.mutate({
      ...input,
      acknowledge: true,
      previewHash: preview.previewHash,
    });
    expect(job).toMatchObject({ hostId, address: input.address, target: 'vfio' });
    const done = await poll(async () => {
      const current = await viewer.api.jobs.get.query({ jobId: job.id });
      return ['queued', 'dispatched', 'running'].includes(current.state) ? undefined : current;
    }, 60_000);
    expect(done?.state).toBe('succeeded');
    expect((await viewer.api.jobs.list.query({ hostId })).items.map((j) => j.id)).toContain(job.id);
    // The agent reports the rebind; the server's stored readiness follows.
    const bound = await poll(async () => {
      const group = await viewer.api.groups.get.query({ hostId, group: gpu?.iommuGroup ?? -1 });
      return group.devices.every((d) => d.status === 'bound') ? group : undefined;
    }, 30_000);
    expect(bound).toBeDefined();
    const audit = await operator.api.audit.list.query({ limit: 200 });
    const actions = audit.items.map((a) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['token-created', 'job-created']));
    const hostAudit = await operator.api.audit.list.query({ hostId, action: 'job-created' });
    expect(hostAudit.items.map((a) => a.username)).toEqual(['oscar']);
  });

  it('agents.revoke disconnects the agent at once: it exits with code 3', async () => {
    const hostId = hostIds.get('vfio-bound') ?? '';
    const result = await admin.api.agents.revoke.mutate({ hostId });
    expect(result.revoked).toHaveLength(1);
    expect(await running.get('vfio-bound')?.exited).toBe(3);
    expect(await failure(admin.api.agents.revoke.mutate({ hostId }))).toMatchObject({
      code: 'NOT_FOUND',
    });
    const audit = await admin.api.audit.list.query({ action: 'agent-revoked' });
    expect(audit.items.map((a) => [a.username, a.hostId])).toEqual([['ada', hostId]]);
    // The revoked host goes offline and stays counted. (Not "exactly 2 online": with a 1 s
    // heartbeat and a 5 s offline window, a loaded CI machine may briefly mark another one offline.)
    const revoked = await poll(async () => {
      const host = await viewer.api.hosts.get.query({ hostId });
      return host.state === 'offline' ? host : undefined;
    }, 30_000);
    expect(revoked?.state).toBe('offline');
    const summary = await viewer.api.fleet.summary.query({});
    expect(summary.hosts.total).toBe(3);
    expect(summary.hosts.offline).toBeGreaterThanOrEqual(1);
  });
});
