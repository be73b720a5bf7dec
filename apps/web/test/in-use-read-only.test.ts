// Devices a VM holds and hosts whose agent may not rebind, through the real server's tRPC API
// and /metrics: the status filter, search by VM name, the counts that keep in-use apart from
// free bound devices, and job creation refused on a held group and on a read-only host.
// The agent does not read holders from /proc yet, so the held device is a scanned fixture
// snapshot with inUse/holder set, ingested as an agent's snapshot would be (the server assesses
// readiness itself, so `in-use` below is core's verdict, not the test's).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { hosts, users } from '@vfio-fleet/db';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { type ApiClient, apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, hello, poll, RawClient, startFleet } from './helpers/harness';
import { type IngestedHost, ingestScenario } from './helpers/inventory';
import { scrape } from './helpers/scrape';

const PASSWORD = 'a long enough password';
/** Group 21 of the vfio-bound scenario: two functions on vfio-pci. */
const HELD = '0000:17:00.0';
const MATE = '0000:17:00.1';
/** A VM name as hostile as a command line allows: the API returns it verbatim, as data. */
const VM = 'web-1 <img src=x onerror=alert(1)>';

function holdDevice(snapshot: HostSnapshot): void {
  const device = snapshot.devices.find((d) => d.address === HELD);
  if (device === undefined) throw new Error(`no ${HELD} in the vfio-bound scenario`);
  device.inUse = true;
  device.holder = { pid: 4242, command: 'qemu-system-x86_64', vm: VM };
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-in-use-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('in-use devices and read-only hosts (%s)', (driver) => {
  let fleet: Fleet;
  let operator: ApiClient;
  let admin: ApiClient;
  let held: IngestedHost;
  let readOnly: IngestedHost;
  let silent: IngestedHost;

  beforeAll(async () => {
    fleet = await startFleet(driver);
    await fleet.db
      .insert(users)
      .values({ username: 'oscar', role: 'operator', passwordHash: await hashPassword(PASSWORD) });
    await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
    operator = apiClient(fleet.url);
    await operator.api.auth.login.mutate({ username: 'oscar', password: PASSWORD });
    admin = apiClient(fleet.url);
    await admin.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
    held = await ingestScenario(fleet.db, tmp, 'vfio-bound', {
      hostname: 'held-host',
      edit: holdDevice,
    });
    readOnly = await ingestScenario(fleet.db, tmp, 'vfio-bound', {
      hostname: 'read-only-host',
      allowRebind: false,
    });
    silent = await ingestScenario(fleet.db, tmp, 'vfio-bound', {
      hostname: 'old-agent-host',
      allowRebind: null,
    });
  });
  afterAll(async () => {
    await fleet.close();
  });

  it('filters by status in-use, with the holder, and keeps bound for the free ones', async () => {
    const inUse = await operator.api.devices.search.query({ status: 'in-use', limit: 50 });
    expect(inUse.items.map((d) => [d.hostname, d.address])).toEqual([['held-host', HELD]]);
    expect(inUse.items[0]).toMatchObject({
      status: 'in-use',
      inUse: true,
      holder: { pid: 4242, command: 'qemu-system-x86_64', vm: VM },
    });
    const bound = await operator.api.devices.search.query({ status: 'bound', limit: 50 });
    expect(bound.items.some((d) => d.hostId === held.hostId && d.address === HELD)).toBe(false);
    // Free devices say so: no holder.
    expect(bound.items.every((d) => !d.inUse && d.holder === null)).toBe(true);
    // Its group mate is free but goes nowhere while the group is held: blocked, by in-use.
    const mate = await operator.api.devices.search.query({
      hostId: held.hostId,
      reason: 'in-use',
      limit: 50,
    });
    expect(mate.items.map((d) => [d.address, d.status, d.inUse])).toEqual([
      [HELD, 'in-use', true],
      [MATE, 'blocked', false],
    ]);
  });

  it("finds which host holds a VM's devices by the VM's name (any case) or command", async () => {
    for (const q of ['WEB-1', '<img src=x', 'qemu-system']) {
      const found = await operator.api.devices.search.query({ q, limit: 50 });
      expect(
        found.items.map((d) => [d.hostname, d.address]),
        q,
      ).toEqual([['held-host', HELD]]);
    }
    // Only held devices match by holder: none of the same scenario's free devices is found.
    const none = await operator.api.devices.search.query({ q: 'web-2', limit: 50 });
    expect(none.items).toEqual([]);
  });

  it('counts in-use apart from bound in hosts, host, summary and capacity', async () => {
    const list = await operator.api.hosts.list.query({ sort: 'hostname', dir: 'asc', limit: 50 });
    const byName = new Map(list.items.map((h) => [h.hostname, h]));
    expect(byName.get('held-host')?.devices).toMatchObject({ inUse: 1, bound: 0 });
    expect(byName.get('read-only-host')?.devices).toMatchObject({ inUse: 0, bound: 2 });
    const host = await operator.api.hosts.get.query({ hostId: held.hostId });
    expect(host.devices).toMatchObject({ inUse: 1, bound: 0 });
    const summary = await operator.api.fleet.summary.query({});
    expect(summary.devices.inUse).toBe(1);
    expect(summary.devices.bound).toBe(4);
    expect(
      summary.devices.inUse +
        summary.devices.bound +
        summary.devices.ready +
        summary.devices.blocked,
    ).toBe(summary.devices.total);
    const capacity = await operator.api.fleet.capacity.query({ groupBy: 'type' });
    expect(capacity.totals.inUse).toBe(1);
    const type = capacity.types.find((t) => t.inUse > 0);
    expect(type).toBeDefined();
    // Capacity's bound is "on vfio", which a held device is too.
    expect(type?.bound).toBeGreaterThanOrEqual(type?.inUse ?? 0);
  });

  it('exposes in-use devices on /metrics', async () => {
    // Read from the database at scrape time; polled in case a scrape cache is older than ingest.
    let value: number | undefined;
    await poll(async () => {
      value = (await scrape(fleet.url)).samples.get('vfio_fleet_devices{status="in-use"}');
      return value === 1 ? value : undefined;
    }, 10_000);
    expect(value).toBe(1);
  });

  it('says which hosts are read-only, and tells the ones that did not say apart', async () => {
    const list = await operator.api.hosts.list.query({ sort: 'hostname', dir: 'asc', limit: 50 });
    const allow = Object.fromEntries(list.items.map((h) => [h.hostname, h.allowRebind]));
    expect(allow).toEqual({
      'held-host': true,
      'old-agent-host': null,
      'read-only-host': false,
    });
    expect((await operator.api.hosts.get.query({ hostId: readOnly.hostId })).allowRebind).toBe(
      false,
    );
  });

  it("stores what each agent's hello says about rebinding; one that says nothing is unknown", async () => {
    for (const [said, stored] of [
      [{ allowRebind: true }, true],
      [{ allowRebind: false }, false],
      [{}, null],
    ] as const) {
      const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
      const client = await RawClient.connect(fleet.wsUrl);
      try {
        client.send(hello({ kind: 'enroll', token }, said));
        const welcome = await client.next('welcome');
        const [row] = await fleet.db
          .select({ allowRebind: hosts.allowRebind })
          .from(hosts)
          .where(eq(hosts.agentId, welcome.agentId));
        expect(row?.allowRebind, JSON.stringify(said)).toBe(stored);
      } finally {
        client.close();
      }
    }
  });

  it('enrollment: "allow rebinding" puts --allow-rebind in the commands it hands out, only then', async () => {
    for (const allowRebind of [true, false]) {
      const created = await admin.api.tokens.create.mutate({ ttlHours: 1, allowRebind });
      expect(created.allowRebind).toBe(allowRebind);
      for (const command of [created.command, created.install.script]) {
        expect(command.endsWith(' --allow-rebind'), command).toBe(allowRebind);
      }
    }
    // Left out, the commands stay read-only, as they were before the choice existed.
    const plain = await admin.api.tokens.create.mutate({ ttlHours: 1 });
    expect(plain.command).not.toContain('--allow-rebind');
  });

  it('refuses to restore a group a VM holds a device of, naming the VM', async () => {
    for (const address of [HELD, MATE]) {
      const preview = await operator.api.jobs.preview.query({
        hostId: held.hostId,
        address,
        target: 'host',
      });
      expect(preview.refusal?.code, address).toBe('in-use');
      const refused = await failure(
        operator.api.jobs.create.mutate({
          hostId: held.hostId,
          address,
          target: 'host',
          acknowledge: true,
          previewHash: preview.previewHash,
          force: true,
        }),
      );
      expect(refused.code).toBe('CONFLICT');
      expect(refused.message).toContain('in-use');
      expect(refused.message).toContain(JSON.stringify(VM));
    }
  });

  it('queues no job for a read-only host, saying how to allow it', async () => {
    for (const host of [readOnly, silent]) {
      const preview = await operator.api.jobs.preview.query({
        hostId: host.hostId,
        address: MATE,
        target: 'host',
      });
      // The plan itself is fine: only the host's agent stands in the way.
      expect(preview.ok).toBe(true);
      expect(preview.hostAllowsRebind).toBe(host === readOnly ? false : null);
      const refused = await failure(
        operator.api.jobs.create.mutate({
          hostId: host.hostId,
          address: MATE,
          target: 'host',
          acknowledge: true,
          previewHash: preview.previewHash,
        }),
      );
      expect(refused.code).toBe('CONFLICT');
      expect(refused.message).toMatch(/^read-only: /);
      expect(refused.message).toContain('--allow-rebind');
    }
    const jobs = await operator.api.jobs.list.query({});
    expect(jobs.items.filter((j) => j.hostId !== held.hostId)).toEqual([]);
  });

  it('skips read-only hosts in a bulk rebind, and queues on the host that allows it', async () => {
    const preview = await operator.api.jobs.previewBulk.query({
      vendorId: '8086',
      deviceId: '1572',
      target: 'vfio',
    });
    const skipped = new Map(preview.skipped.map((s) => [s.hostname, s.code]));
    expect(skipped.get('read-only-host')).toBe('read-only');
    expect(skipped.get('old-agent-host')).toBe('read-only');
    expect(preview.entries.every((e) => e.hostId === held.hostId)).toBe(true);
  });
});
