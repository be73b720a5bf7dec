// A host's stored inventory damaged after it was written (a restore gone wrong, a hand edit): a
// device whose document no longer parses must not drop out of its group's plan, and a delta must
// not be applied to (or crash on) such state: the agent is asked for a snapshot, which repairs it.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { type Database, devices, hosts } from '@vfio-fleet/db';
import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestSnapshot } from '../src/gateway/ingest';
import { buildPreview, loadHostForPlanning } from '../src/jobs/job-preview';
import { drivers } from './helpers/harness';
import {
  type IngestedHost,
  ingestChange,
  ingestScenario,
  openTestDb,
  snapshotMessage,
} from './helpers/inventory';

describe.each(drivers)('damaged stored state on %s', (driver) => {
  let tmp: string;
  let close: () => Promise<void>;
  let db: Database;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'web-stored-state-'));
    const testDb = await openTestDb(driver);
    db = testDb.db;
    close = testDb.close;
  });
  afterAll(async () => {
    await close?.();
    await rm(tmp, { recursive: true, force: true });
  });

  /** The dual-gpu host, and its first GPU with the audio function that shares its group. */
  async function gpuHost(): Promise<{ host: IngestedHost; gpu: string; audio: string }> {
    const host = await ingestScenario(db, tmp, 'dual-gpu', { hostname: `gpu-${Math.random()}` });
    const gpu = host.snapshot.devices.find((d) => d.classCode.startsWith('0300'));
    const audio = host.snapshot.devices.find(
      (d) => d.iommuGroup === gpu?.iommuGroup && d.address !== gpu?.address,
    );
    if (gpu === undefined || audio === undefined) throw new Error('no GPU with a group mate');
    return { host, gpu: gpu.address, audio: audio.address };
  }

  async function damageDevice(hostId: string, address: string): Promise<void> {
    await db
      .update(devices)
      // Still naming its address: only a check of the whole document finds it damaged.
      .set({ facts: sql`jsonb_build_object('address', ${address}::text, 'vendorId', 42)` })
      .where(and(eq(devices.hostId, hostId), eq(devices.address, address)));
  }

  /** The same inventory with one binding changed: a device-only delta touching `address`. */
  function withOverride(snapshot: HostSnapshot, address: string): HostSnapshot {
    const next = structuredClone(snapshot);
    const device = next.devices.find((d) => d.address === address);
    if (device === undefined) throw new Error(`no ${address}`);
    device.driverOverride = 'vfio-pci';
    return next;
  }

  it('plans no group with a damaged member: the preview refuses it, naming the member', async () => {
    const { host, gpu, audio } = await gpuHost();
    await damageDevice(host.hostId, audio);
    const planning = await loadHostForPlanning(db, host.hostId);
    const preview = buildPreview(planning, gpu, 'vfio', new Map());
    expect(preview.ok).toBe(false);
    expect(preview.refusal?.code).toBe('group-unreadable');
    expect(preview.refusal?.message).toContain(audio);
  });

  it('answers a delta on a damaged device with a resync, and the next snapshot repairs it', async () => {
    const { host, audio } = await gpuHost();
    await damageDevice(host.hostId, audio);
    const outcome = await ingestChange(
      db,
      host.hostId,
      host.snapshot,
      withOverride(host.snapshot, audio),
      1,
    );
    expect(outcome).toEqual({
      applied: false,
      reason: 'the stored inventory of this host is damaged: a snapshot replaces it',
    });
    // The resync's snapshot is the inventory the hash was taken of: it must still be stored.
    const resent = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(host.snapshot, 2, 'epoch-2'),
      {},
    );
    expect(resent.unchanged).toBe(false);
    const planning = await loadHostForPlanning(db, host.hostId);
    expect(planning.snapshot.devices.map((d) => d.address)).toContain(audio);
    expect(planning.snapshot.problems).toEqual(host.snapshot.problems);
  });

  it('answers any delta on a damaged host section with a resync, not an internal error', async () => {
    const { host, gpu } = await gpuHost();
    await db.update(hosts).set({ host: sql`'"garbage"'::jsonb` }).where(eq(hosts.id, host.hostId));
    await expect(loadHostForPlanning(db, host.hostId)).rejects.toThrow(/damaged/);
    const outcome = await ingestChange(
      db,
      host.hostId,
      host.snapshot,
      withOverride(host.snapshot, gpu),
      1,
    );
    expect(outcome).toMatchObject({ applied: false });
    const resent = await ingestSnapshot(
      db,
      host.hostId,
      snapshotMessage(host.snapshot, 2, 'epoch-2'),
      {},
    );
    expect(resent.unchanged).toBe(false);
    expect((await loadHostForPlanning(db, host.hostId)).snapshot.host).toEqual(host.snapshot.host);
  });
});
