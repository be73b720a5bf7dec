// ingestSnapshot / ingestDelta against a real database: what an unchanged resend, a changed
// snapshot, a label change and deltas write, seen in the rows themselves (xmin changes whenever
// PostgreSQL writes a new row version, so an unchanged xmin proves nothing was rewritten).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  assessSnapshot,
  diffSnapshots,
  encodeMessage,
  type HostSnapshot,
  parseAgentMessageForServer,
} from '@vfio-fleet/core';
import { bulkUpsertDevices, type Database, hostLabels, hosts } from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson, ingestDelta, ingestSnapshot, inventoryHash } from '../src/gateway/ingest';
import { loadSnapshot } from '../src/gateway/stored-state';
import { drivers } from './helpers/harness';
import {
  type IngestedHost,
  ingestChange,
  ingestScenario,
  openTestDb,
  scenarioSnapshot,
  snapshotMessage,
} from './helpers/inventory';

/** address -> xmin of every device row of the host. */
async function deviceVersions(db: Database, hostId: string): Promise<Map<string, string>> {
  const result = await db.execute(
    sql`SELECT address, xmin::text AS xmin FROM devices WHERE host_id = ${hostId}`,
  );
  const rows = (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as {
    address: string;
    xmin: string;
  }[];
  return new Map(rows.map((row) => [row.address, row.xmin]));
}

async function hostRow(db: Database, hostId: string) {
  const [row] = await db.select().from(hosts).where(eq(hosts.id, hostId));
  if (row === undefined) throw new Error('host row is gone');
  return row;
}

/** The same content as a fresh parse would give it: another collectedAt, keys reversed. */
function resendOf(snapshot: HostSnapshot): HostSnapshot {
  const reversed = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(reversed);
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(
      Object.entries(value)
        .reverse()
        .map(([k, v]) => [k, reversed(v)]),
    );
  };
  const copy = reversed(structuredClone(snapshot)) as HostSnapshot;
  copy.collectedAt = new Date(Date.parse(snapshot.collectedAt) + 60_000).toISOString();
  return copy;
}

describe('canonicalJson', () => {
  it('ignores key order and undefined members, keeps array order', () => {
    expect(canonicalJson({ b: 1, a: [2, { d: null, c: 'x' }], u: undefined })).toBe(
      canonicalJson({ a: [2, { c: 'x', d: null }], b: 1 }),
    );
    expect(canonicalJson([1, 2])).not.toBe(canonicalJson([2, 1]));
    expect(JSON.parse(canonicalJson({ z: 'q"\\', a: [1.5, true, null] }))).toEqual({
      a: [1.5, true, null],
      z: 'q"\\',
    });
  });
});

describe.each(drivers)('ingest on %s', (driver) => {
  let tmp: string;
  let close: () => Promise<void>;
  let db: Database;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'web-ingest-'));
    const testDb = await openTestDb(driver);
    db = testDb.db;
    close = testDb.close;
  });
  afterAll(async () => {
    await close?.();
    await rm(tmp, { recursive: true, force: true });
  });

  async function freshHost(labels: Record<string, string> = { rack: 'r1' }): Promise<IngestedHost> {
    return ingestScenario(db, tmp, 'mlx5-vf', { hostname: `host-${Math.random()}`, labels });
  }

  it('an unchanged resend writes no device row, only the stream position', async () => {
    const host = await freshHost();
    const before = await deviceVersions(db, host.hostId);
    expect(before.size).toBe(host.snapshot.devices.length);
    const stored = await hostRow(db, host.hostId);
    expect(stored.inventoryHash).toMatch(/^v2:[0-9a-f]{64}\.[0-9a-f]{64}:[0-9a-f]{64}$/);

    const result = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(resendOf(host.snapshot), 2, 'epoch-2'),
      { rack: 'r1' },
    );
    expect(result).toEqual({ devicesWritten: 0, devicesDeleted: 0, unchanged: true });
    expect(await deviceVersions(db, host.hostId)).toEqual(before);
    const after = await hostRow(db, host.hostId);
    expect(after).toMatchObject({
      epoch: 'epoch-2',
      lastSeq: 2,
      inventoryHash: stored.inventoryHash,
    });
  });

  it('a changed snapshot writes exactly the changed device', async () => {
    const host = await freshHost();
    const before = await deviceVersions(db, host.hostId);
    const next = structuredClone(host.snapshot);
    const target = next.devices[0];
    if (target === undefined) throw new Error('the scenario has no devices');
    target.numaNode = (target.numaNode ?? 0) + 1;

    const result = await ingestSnapshot(db, host.hostId, snapshotMessage(next, 2), { rack: 'r1' });
    expect(result).toEqual({ devicesWritten: 1, devicesDeleted: 0, unchanged: false });
    const after = await deviceVersions(db, host.hostId);
    for (const [address, xmin] of after) {
      if (address === target.address) expect(xmin).not.toBe(before.get(address));
      else expect(xmin).toBe(before.get(address));
    }
    // And that state is now the stored one: sending it again writes nothing.
    const again = await ingestSnapshot(db, host.hostId, snapshotMessage(next, 3), { rack: 'r1' });
    expect(again.unchanged).toBe(true);
  });

  it('labels changed alone are written, devices are not', async () => {
    const host = await freshHost({ rack: 'r1' });
    const before = await deviceVersions(db, host.hostId);
    const result = await ingestSnapshot(db, host.hostId, snapshotMessage(host.snapshot, 2), {
      rack: 'r2',
      tier: 'gpu',
    });
    expect(result).toEqual({ devicesWritten: 0, devicesDeleted: 0, unchanged: false });
    expect(await deviceVersions(db, host.hostId)).toEqual(before);
    const labels = await db
      .select({ key: hostLabels.key, value: hostLabels.value })
      .from(hostLabels)
      .where(eq(hostLabels.hostId, host.hostId))
      .orderBy(hostLabels.key);
    expect(labels).toEqual([
      { key: 'rack', value: 'r2' },
      { key: 'tier', value: 'gpu' },
    ]);
  });

  it('a resend after deltas still matches the hash the deltas left', async () => {
    const host = await freshHost();
    const base = host.snapshot;
    const next = structuredClone(base);
    const target = next.devices[1];
    if (target === undefined) throw new Error('the scenario has too few devices');
    target.driverOverride = 'vfio-pci';
    const delta = diffSnapshots(base, next);
    if (delta === null) throw new Error('the change made no delta');

    const outcome = await ingestDelta(db, host.hostId, {
      type: 'delta',
      epoch: 'test-epoch',
      baseSeq: 1,
      seq: 2,
      delta,
    });
    expect(outcome).toMatchObject({ applied: true, result: { unchanged: false } });
    const afterDelta = await deviceVersions(db, host.hostId);

    // The agent reconnects and resends its (post-delta) inventory: nothing to write.
    const result = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(resendOf(next), 3, 'epoch-2'),
      { rack: 'r1' },
    );
    expect(result.unchanged).toBe(true);
    expect(await deviceVersions(db, host.hostId)).toEqual(afterDelta);
  });

  it('a delta writes the host section only when it changed it, and then all its columns', async () => {
    const host = await freshHost();
    const deviceOnly = structuredClone(host.snapshot);
    const target = deviceOnly.devices[1];
    if (target === undefined) throw new Error('the scenario has too few devices');
    target.driverOverride = 'vfio-pci';
    expect(diffSnapshots(host.snapshot, deviceOnly)?.host).toBeUndefined();
    const stored = await hostRow(db, host.hostId);
    expect(await ingestChange(db, host.hostId, host.snapshot, deviceOnly, 1)).toMatchObject({
      applied: true,
    });
    const afterDevice = await hostRow(db, host.hostId);
    expect(afterDevice).toMatchObject({ lastSeq: 2, kernelRelease: stored.kernelRelease });
    expect(afterDevice.host).toEqual(stored.host);

    // A new kernel after a reboot without a reconnect: the host section moves, every column too.
    const rebooted = structuredClone(deviceOnly);
    rebooted.host.kernelRelease = '6.12.99-test-amd64';
    expect(await ingestChange(db, host.hostId, deviceOnly, rebooted, 2)).toMatchObject({
      applied: true,
    });
    const afterHost = await hostRow(db, host.hostId);
    expect(afterHost).toMatchObject({ lastSeq: 3, kernelRelease: '6.12.99-test-amd64' });
    expect(afterHost.host).toMatchObject({ kernelRelease: '6.12.99-test-amd64' });
    // What the deltas left is what a resend of the same inventory hashes to.
    const resend = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(resendOf(rebooted), 4, 'epoch-2'),
      { rack: 'r1' },
    );
    expect(resend.unchanged).toBe(true);
  });

  it('a snapshot parsed without readiness (parseAgentMessageForServer) hashes like a full one', async () => {
    const host = await freshHost();
    const before = await deviceVersions(db, host.hostId);
    const parsed = parseAgentMessageForServer(
      encodeMessage(snapshotMessage(resendOf(host.snapshot), 2, 'epoch-2')),
    );
    if (!parsed.ok || parsed.message.type !== 'snapshot')
      throw new Error('the frame did not parse');
    const result = await ingestSnapshot(db, host.hostId, parsed.message, { rack: 'r1' });
    expect(result.unchanged).toBe(true);
    expect(await deviceVersions(db, host.hostId)).toEqual(before);
  });

  it('a host whose hash was never stored is written in full, then matches', async () => {
    const host = await freshHost();
    await db.update(hosts).set({ inventoryHash: null }).where(eq(hosts.id, host.hostId));
    const first = await ingestSnapshot(db, host.hostId, snapshotMessage(host.snapshot, 2), {
      rack: 'r1',
    });
    expect(first).toMatchObject({ devicesWritten: 0, unchanged: false });
    const second = await ingestSnapshot(db, host.hostId, snapshotMessage(host.snapshot, 3), {
      rack: 'r1',
    });
    expect(second.unchanged).toBe(true);
  });

  it('device deltas store what a whole-host assessment would, and leave a hash a resend matches', async () => {
    // dual-gpu: GPUs with their HDMI audio functions in shared groups, behind root ports. Each step
    // changes some devices only (re-assessed in scope: their group mates, their parents), the last
    // the host section too (re-assessed whole).
    const host = await ingestScenario(db, tmp, 'dual-gpu', { hostname: `dg-${Math.random()}` });
    const steps: ((s: HostSnapshot) => void)[] = [
      (s) => {
        const gpu = s.devices.find((d) => d.classCode.startsWith('03') && d.iommuGroup !== null);
        if (gpu === undefined) throw new Error('dual-gpu has no GPU in a group');
        gpu.driver = 'vfio-pci';
        gpu.driverModule = 'vfio_pci';
      },
      (s) => {
        const audio = s.devices.find((d) => d.classCode.startsWith('0403'));
        if (audio === undefined) throw new Error('dual-gpu has no audio function');
        s.devices = s.devices.filter((d) => d !== audio);
      },
      (s) => {
        const bridge = s.devices.find((d) => d.kind === 'bridge');
        const gpu = s.devices.find((d) => d.classCode.startsWith('03') && d.parent !== null);
        if (bridge === undefined || gpu === undefined) throw new Error('no bridge or GPU');
        s.devices.push({
          ...structuredClone(gpu),
          address: '0000:7f:00.0',
          parent: bridge.address,
        });
        s.devices.sort((a, b) => a.address.localeCompare(b.address));
      },
      (s) => {
        s.host.kernelRelease = '6.12.99-test';
        const gpu = s.devices.find((d) => d.driver === 'vfio-pci');
        if (gpu !== undefined) gpu.driver = null;
      },
    ];
    let before = host.snapshot;
    let seq = 1;
    for (const step of steps) {
      const after = structuredClone(before);
      step(after);
      expect(await ingestChange(db, host.hostId, before, after, seq)).toMatchObject({
        applied: true,
      });
      seq += 1;
      const row = await hostRow(db, host.hostId);
      if (row.host === null) throw new Error('host section is gone');
      const stored = await loadSnapshot(db, host.hostId, row.host, row.problems);
      const whole = assessSnapshot(snapshotMessage(after, seq).snapshot);
      expect(stored?.snapshot.devices).toEqual(whole.devices);
      // The digest a delta updated is the one a whole snapshot of the same inventory has.
      expect(row.inventoryHash).toBe(inventoryHash(whole, {}));
      before = after;
    }
    const resend = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(resendOf(before), seq + 1, 'epoch-2'),
      {},
    );
    expect(resend.unchanged).toBe(true);
  });

  it.runIf(driver === 'postgres')(
    'a first snapshot that meets rows another transaction stored meanwhile is stored over them',
    async () => {
      const snapshot = await scenarioSnapshot(tmp, 'mlx5-vf');
      const [row] = await db
        .insert(hosts)
        .values({ agentId: `test-${Math.random()}`, hostname: 'raced' })
        .returning({ id: hosts.id });
      if (row === undefined) throw new Error('no host row');
      const hostId = row.id;
      const [device] = assessSnapshot(snapshotMessage(snapshot, 1).snapshot).devices;
      if (device === undefined) throw new Error('mlx5-vf has no device');
      // Another transaction writes one of the host's devices and commits only once the snapshot's
      // transaction has found the host empty and is waiting on that row's key: its plain INSERT
      // then fails with a unique violation, and ingestSnapshot must store the snapshot again with
      // the upserts rather than fail.
      let release = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let written = () => {};
      const isWritten = new Promise<void>((resolve) => {
        written = resolve;
      });
      const other = db.transaction(async (tx) => {
        await bulkUpsertDevices(tx, hostId, [{ ...device, driver: 'stale' }]);
        written();
        await released;
      });
      await isWritten;
      const ingest = ingestSnapshot(db, hostId, snapshotMessage(snapshot, 1), { rack: 'r1' });
      for (let tries = 0; ; tries++) {
        const waiting = await db.execute(
          sql`SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        const [w] = (Array.isArray(waiting) ? waiting : []) as { n: number }[];
        if ((w?.n ?? 0) > 0) break;
        if (tries > 200) throw new Error('the snapshot never waited on the other transaction');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      release();
      await other;
      const result = await ingest;
      expect(result.unchanged).toBe(false);
      const stored = await hostRow(db, hostId);
      if (stored.host === null) throw new Error('host section is gone');
      const back = await loadSnapshot(db, hostId, stored.host, stored.problems);
      expect(back?.snapshot.devices).toEqual(
        assessSnapshot(snapshotMessage(snapshot, 1).snapshot).devices,
      );
      const again = await ingestSnapshot(db, hostId, snapshotMessage(snapshot, 2), { rack: 'r1' });
      expect(again.unchanged).toBe(true);
    },
  );

  it('the hash covers the server’s readiness, not the agent’s', async () => {
    const snapshot = await scenarioSnapshot(tmp, 'mlx5-vf');
    const lying = structuredClone(snapshot);
    for (const device of lying.devices) device.readiness = { status: 'ready', reasons: [] };
    const [row] = await db
      .insert(hosts)
      .values({ agentId: `test-${Math.random()}`, hostname: 'liar' })
      .returning({ id: hosts.id });
    if (row === undefined) throw new Error('no host row');
    await ingestSnapshot(db, row.id, snapshotMessage(snapshot, 1), {});
    const again = await ingestSnapshot(db, row.id, snapshotMessage(lying, 2), {});
    expect(again.unchanged).toBe(true);
  });
});
