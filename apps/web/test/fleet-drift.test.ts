// The overview's and capacity page's server side: fleet.drift, fleet.labelKeys, capacity split by a
// label key and filtered by hostname, devices.search by hostname, and the summary's remedies. The
// real server on port 0 and a real HTTP tRPC client, on PGlite and (with DATABASE_URL) PostgreSQL.
// Inventories are real: fixture trees scanned by the real agent bundle (`scan --json`), stored by the
// server's own ingestSnapshot. The "old kernel" host is the same mlx5-vf board on a tree whose kernel
// is 5.10 and has no modules.alias, so the agent itself resolves its VFs to plain vfio-pci. Expected
// values are computed here from those snapshots, never by re-running the server's SQL.
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { hosts, users } from '@vfio-fleet/db';
import { buildScenario, type ScenarioName } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { ingestSnapshot } from '../src/gateway/ingest';
import { type ApiClient, apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, scanJson, startFleet } from './helpers/harness';
import { snapshotMessage } from './helpers/inventory';

const PASSWORD = 'a long enough password';
const OLD_KERNEL = '5.10.0-32-amd64';

interface HostCase {
  hostname: string;
  scenario: ScenarioName;
  oldKernel: boolean;
  labels: Record<string, string>;
}

const HOSTS: HostCase[] = [
  { hostname: 'nic-new-1', scenario: 'mlx5-vf', oldKernel: false, labels: { rack: 'r1' } },
  { hostname: 'nic-new-2', scenario: 'mlx5-vf', oldKernel: false, labels: { rack: 'r2' } },
  { hostname: 'nic-old-1', scenario: 'mlx5-vf', oldKernel: true, labels: { rack: 'r2' } },
  { hostname: 'gpu-1', scenario: 'dual-gpu', oldKernel: false, labels: {} },
];

let tmp: string;
const snapshots = new Map<string, HostSnapshot>();

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-drift-'));
  // One scan per distinct tree; each host gets its own copy with its own hostname.
  const scans = new Map<string, HostSnapshot>();
  for (const host of HOSTS) {
    const key = `${host.scenario}-${host.oldKernel ? 'old' : 'new'}`;
    let scan = scans.get(key);
    if (scan === undefined) {
      const root = path.join(tmp, key);
      await buildScenario(root, host.scenario, host.oldKernel ? { modulesAlias: null } : {});
      // An older kernel: before 5.16 there are no vfio_pci: aliases to match, and here no file.
      if (host.oldKernel) await writeFile(path.join(root, 'proc/sys/kernel/osrelease'), OLD_KERNEL);
      scan = snapshotMessage(scanJson(root), 1).snapshot;
      scans.set(key, scan);
    }
    const snapshot = structuredClone(scan);
    snapshot.host.hostname = host.hostname;
    snapshots.set(host.hostname, snapshot);
  }
}, 120_000);

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

type Device = HostSnapshot['devices'][number];
const boardKey = (d: Device) =>
  `${d.vendorId}:${d.deviceId}:${d.subsystemVendorId ?? ''}:${d.subsystemDeviceId ?? ''}`;

describe.each(drivers)('fleet drift, label split and host filters (%s)', (driver) => {
  let fleet: Fleet;
  let viewer: ApiClient;

  beforeAll(async () => {
    fleet = await startFleet(driver);
    await fleet.db
      .insert(users)
      .values({ username: 'vic', role: 'viewer', passwordHash: await hashPassword(PASSWORD) });
    viewer = apiClient(fleet.url);
    await viewer.api.auth.login.mutate({ username: 'vic', password: PASSWORD });
    for (const host of HOSTS) {
      const snapshot = snapshots.get(host.hostname);
      if (snapshot === undefined) throw new Error(`no snapshot for ${host.hostname}`);
      const [row] = await fleet.db
        .insert(hosts)
        .values({ agentId: `test-${randomUUID()}`, hostname: host.hostname })
        .returning({ id: hosts.id });
      if (row === undefined) throw new Error('no host row returned');
      await ingestSnapshot(fleet.db, row.id, snapshotMessage(snapshot, 1), host.labels);
    }
  }, 120_000);

  afterAll(async () => {
    await fleet?.close();
  });

  it('the fixtures really differ: the old kernel resolves the ConnectX VFs to vfio-pci, the new one to mlx5_vfio_pci', () => {
    const vfDriver = (hostname: string) =>
      snapshots.get(hostname)?.devices.find((d) => d.vendorId === '15b3' && d.deviceId === '101e')
        ?.vfio?.driver;
    expect(snapshots.get('nic-old-1')?.host.kernelRelease).toBe(OLD_KERNEL);
    expect(vfDriver('nic-new-1')).toBe('mlx5_vfio_pci');
    expect(vfDriver('nic-old-1')).toBe('vfio-pci');
  });

  it('fleet.drift lists exactly the boards with more than one vfio driver, with hosts per kernel and driver', async () => {
    // Expected, from the snapshots: board -> kernel -> driver -> hostnames.
    const boards = new Map<string, Map<string, Set<string>>>();
    for (const [hostname, snapshot] of snapshots) {
      for (const d of snapshot.devices) {
        if (d.vfio === null) continue;
        const variants = boards.get(boardKey(d)) ?? new Map<string, Set<string>>();
        const variant = `${snapshot.host.kernelRelease} -> ${d.vfio.driver}`;
        variants.set(variant, (variants.get(variant) ?? new Set()).add(hostname));
        boards.set(boardKey(d), variants);
      }
    }
    const drifting = [...boards].filter(
      ([, variants]) => new Set([...variants.keys()].map((v) => v.split(' -> ')[1])).size > 1,
    );
    expect(drifting.length).toBeGreaterThan(0);

    const drift = await viewer.api.fleet.drift.query({});
    expect(drift.truncated).toBe(false);
    const got = new Map(
      drift.types.map((t) => [
        `${t.vendorId}:${t.deviceId}:${t.subsystemVendorId ?? ''}:${t.subsystemDeviceId ?? ''}`,
        new Map(t.variants.map((v) => [`${v.kernelRelease} -> ${v.vfioDriver}`, v.hosts])),
      ]),
    );
    expect(got).toEqual(
      new Map(
        drifting.map(([key, variants]) => [
          key,
          new Map([...variants].map(([variant, names]) => [variant, names.size])),
        ]),
      ),
    );
    const vf = drift.types.find((t) => t.vendorId === '15b3' && t.deviceId === '101e');
    const vfFacts = snapshots
      .get('nic-new-1')
      ?.devices.find((d) => d.vendorId === '15b3' && d.deviceId === '101e');
    expect(vf).toMatchObject({
      hosts: 3,
      vendorName: vfFacts?.names.vendor,
      deviceName: vfFacts?.names.device,
    });
    expect(vf?.variants).toEqual([
      { kernelRelease: OLD_KERNEL, vfioDriver: 'vfio-pci', hosts: 1, devices: expect.any(Number) },
      {
        kernelRelease: '6.12.117+deb12-amd64',
        vfioDriver: 'mlx5_vfio_pci',
        hosts: 2,
        devices: expect.any(Number),
      },
    ]);
    // The dual-gpu host's boards have one driver each: never drift.
    const gpuBoards = new Set(snapshots.get('gpu-1')?.devices.map(boardKey));
    for (const key of got.keys()) expect(gpuBoards.has(key)).toBe(false);
  });

  it('fleet.drift honours labels and its limit', async () => {
    // Rack r1 holds only new-kernel hosts: nothing drifts there.
    expect((await viewer.api.fleet.drift.query({ labels: { rack: 'r1' } })).types).toEqual([]);
    // Rack r2 holds one host of each kernel: the VFs drift.
    const r2 = await viewer.api.fleet.drift.query({ labels: { rack: 'r2' } });
    expect(r2.types.map((t) => `${t.vendorId}:${t.deviceId}`)).toContain('15b3:101e');
    const all = await viewer.api.fleet.drift.query({});
    const one = await viewer.api.fleet.drift.query({ limit: 1 });
    expect(one.types).toHaveLength(1);
    expect(one.types[0]).toEqual(all.types[0]);
    expect(one.truncated).toBe(all.types.length > 1);
    expect((await failure(viewer.api.fleet.drift.query({ limit: 0 }))).code).toBe('BAD_REQUEST');
  });

  it('fleet.labelKeys counts hosts and values per key', async () => {
    expect(await viewer.api.fleet.labelKeys.query()).toEqual([
      { key: 'rack', hosts: 3, values: 2 },
    ]);
  });

  it('fleet.capacity split by a label key: per-value counts add up to the type, unlabelled hosts as null', async () => {
    const capacity = await viewer.api.fleet.capacity.query({ labelKey: 'rack', groupBy: 'numa' });
    const labelOf = new Map(HOSTS.map((h) => [h.hostname, h.labels.rack ?? null]));
    for (const type of capacity.types) {
      // Expected per rack value, from the snapshots.
      const expected = new Map<string | null, number>();
      for (const [hostname, snapshot] of snapshots) {
        for (const d of snapshot.devices) {
          if (d.vendorId !== type.vendorId || d.deviceId !== type.deviceId) continue;
          const value = labelOf.get(hostname) ?? null;
          expected.set(value, (expected.get(value) ?? 0) + 1);
        }
      }
      expect(new Map(type.byLabel?.map((l) => [l.value, l.total]))).toEqual(expected);
      // Both splits at once: the NUMA split still adds up to the type as well.
      const sum = (rows: { total: number; ready: number }[] | undefined) =>
        (rows ?? []).reduce((s, r) => ({ total: s.total + r.total, ready: s.ready + r.ready }), {
          total: 0,
          ready: 0,
        });
      expect(sum(type.byLabel)).toEqual({ total: type.total, ready: type.ready });
      expect(sum(type.byNuma)).toEqual({ total: type.total, ready: type.ready });
      // Unlabelled last.
      const values = type.byLabel?.map((l) => l.value) ?? [];
      if (values.includes(null)) expect(values.at(-1)).toBeNull();
    }
    // Without labelKey the output has no byLabel at all.
    const plain = await viewer.api.fleet.capacity.query({});
    expect(plain.types.every((t) => t.byLabel === undefined)).toBe(true);
    expect(plain.totals).toEqual(capacity.totals);
  });

  it('fleet.capacity and devices.search filter by hostname', async () => {
    const nicDevices = ['nic-new-1', 'nic-new-2', 'nic-old-1'].reduce(
      (n, h) => n + (snapshots.get(h)?.devices.length ?? 0),
      0,
    );
    const capacity = await viewer.api.fleet.capacity.query({ hostSearch: 'NIC-' });
    expect(capacity.totals.total).toBe(nicDevices);
    expect((await viewer.api.fleet.capacity.query({ hostSearch: 'nope' })).types).toEqual([]);

    const found = await viewer.api.devices.search.query({ hostSearch: 'old', limit: 200 });
    expect(found.items.length).toBe(snapshots.get('nic-old-1')?.devices.length);
    expect(new Set(found.items.map((d) => d.hostname))).toEqual(new Set(['nic-old-1']));
    // `%` is literal, not a wildcard.
    expect((await viewer.api.devices.search.query({ hostSearch: '%' })).items).toEqual([]);
  });

  it("fleet.summary gives each top blocking reason one device's message with that same device's remedy", async () => {
    const summary = await viewer.api.fleet.summary.query({});
    expect(summary.topBlockingReasons.length).toBeGreaterThan(1);
    // code -> the (message, remedy) pairs core produced, from the snapshots.
    const pairs = new Map<string, Set<string>>();
    for (const snapshot of snapshots.values()) {
      for (const d of snapshot.devices) {
        const first = d.readiness.reasons[0];
        if (d.readiness.status !== 'blocked' || first === undefined) continue;
        const pair = JSON.stringify([first.message, first.remedy]);
        pairs.set(first.code, (pairs.get(first.code) ?? new Set()).add(pair));
      }
    }
    for (const reason of summary.topBlockingReasons) {
      expect(reason.message).toBeTruthy();
      expect(pairs.get(reason.code)?.has(JSON.stringify([reason.message, reason.remedy]))).toBe(
        true,
      );
    }
  });

  it('devices.search filters by the first reason code', async () => {
    const summary = await viewer.api.fleet.summary.query({});
    for (const reason of summary.topBlockingReasons) {
      const page = await viewer.api.devices.search.query({ reason: reason.code, limit: 200 });
      expect(page.items.length).toBe(reason.count);
      expect(page.items.every((d) => d.firstReason === reason.code)).toBe(true);
    }
    const bad = await failure(viewer.api.devices.search.query({ reason: "x' OR 1=1" }));
    expect(bad.code).toBe('BAD_REQUEST');
  });
});
