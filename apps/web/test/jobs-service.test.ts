// The jobs service on stored inventories (real snapshots of fixture hosts, scanned by the real agent
// and ingested by the server's own ingest), on PGlite always and on PostgreSQL with DATABASE_URL:
// previews planned with core, creation against the current preview only, one active job per
// group (the database's partial unique index included), cancel, keyset pagination, bulk with a
// canary, and the state-transition module the dispatcher builds on.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { JobResultMessage } from '@vfio-fleet/core';
import { type Database, type JobRow, jobEvents, jobs, users } from '@vfio-fleet/db';
import { and, asc, desc, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listAudit } from '../src/audit/audit-log';
import { ServerError } from '../src/errors';
import { isActiveGroupViolation } from '../src/jobs/job-rules';
import {
  type Actor,
  cancelJob,
  createBulk,
  createJob,
  getJob,
  type JobView,
  listJobs,
  previewBulk,
  previewJob,
} from '../src/jobs/job-service';
import {
  afterJobTerminal,
  recordJobEvent,
  terminalStateOf,
  transitionJob,
} from '../src/jobs/transitions';
import { drivers } from './helpers/harness';
import { type IngestedHost, ingestScenario, openTestDb, reingest } from './helpers/inventory';

/** mlx5-vf: the ConnectX-6 Dx VFs, each alone in its IOMMU group, ready for mlx5_vfio_pci. */
const VF = '0000:41:00.2';
const VF_GROUP = 23;
const OTHER_VF = '0000:41:00.3';
/** critical-nvme-nic: the root disk's NVMe controller, host-critical. */
const ROOT_NVME = '0000:17:00.0';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-jobs-service-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The ServerError a promise rejects with (fails the test when it resolves or throws another). */
async function serverError(promise: Promise<unknown>): Promise<ServerError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ServerError) return error;
    throw error;
  }
  throw new Error('expected a ServerError, but it resolved');
}

async function eventsOf(db: Database, jobId: string) {
  return db.select().from(jobEvents).where(eq(jobEvents.jobId, jobId)).orderBy(asc(jobEvents.id));
}

async function jobRow(db: Database, jobId: string): Promise<JobRow> {
  const [row] = await db.select().from(jobs).where(eq(jobs.id, jobId));
  if (row === undefined) throw new Error(`no job ${jobId}`);
  return row;
}

/** A job-result as an agent would send it. */
function jobResult(jobId: string, overrides: Partial<JobResultMessage> = {}): JobResultMessage {
  const now = new Date().toISOString();
  return {
    type: 'job-result',
    jobId,
    status: 'succeeded',
    reason: null,
    failedStep: null,
    kernelError: null,
    before: [],
    after: [],
    persistence: null,
    startedAt: now,
    finishedAt: now,
    ...overrides,
  };
}

describe('terminalStateOf', () => {
  const id = 'job-1';
  it('maps statuses and refusal codes to terminal states, with the reason', () => {
    expect(terminalStateOf(jobResult(id))).toEqual({
      state: 'succeeded',
      reasonCode: null,
      reasonMessage: null,
    });
    const refused = (code: string) =>
      terminalStateOf(
        jobResult(id, {
          status: 'refused',
          reason: { code, message: `said ${code}`, reasons: [] },
        }),
      );
    expect(refused('deadline-passed')).toEqual({
      state: 'expired',
      reasonCode: 'deadline-passed',
      reasonMessage: 'said deadline-passed',
    });
    expect(refused('deadline-exceeded').state).toBe('expired');
    expect(refused('cancelled').state).toBe('cancelled');
    expect(refused('read-only').state).toBe('failed');
    expect(refused('blocked')).toMatchObject({ state: 'failed', reasonCode: 'blocked' });
    const rolledBack = terminalStateOf(
      jobResult(id, {
        status: 'rolled_back',
        kernelError: { errno: 'EBUSY', message: 'Device or resource busy' },
      }),
    );
    expect(rolledBack.state).toBe('rolled_back');
    expect(rolledBack.reasonCode).toBe('step-failed');
    expect(rolledBack.reasonMessage).toContain('EBUSY');
    expect(terminalStateOf(jobResult(id, { status: 'failed' }))).toMatchObject({
      state: 'failed',
      reasonCode: 'failed',
    });
  });
});

describe.each(drivers)('jobs service (%s)', (driver) => {
  let db: Database;
  let close: () => Promise<void>;
  let actor: Actor;
  /** mlx5-vf, for single jobs. */
  let nic: IngestedHost;
  /** critical-nvme-nic. */
  let critical: IngestedHost;

  beforeAll(async () => {
    ({ db, close } = await openTestDb(driver));
    const [user] = await db
      .insert(users)
      .values({ username: 'op', passwordHash: 'not-a-real-hash', role: 'operator' })
      .returning();
    if (user === undefined) throw new Error('no user row');
    actor = { userId: user.id, username: user.username, role: 'operator' };
    nic = await ingestScenario(db, tmp, 'mlx5-vf');
    critical = await ingestScenario(db, tmp, 'critical-nvme-nic');
  });
  afterAll(async () => {
    await close();
  });

  it('previews an mlx5 VF on its variant driver, with steps and a stable hash', async () => {
    const preview = await previewJob(db, { hostId: nic.hostId, address: VF, target: 'vfio' });
    expect(preview.ok).toBe(true);
    expect(preview.refusal).toBeNull();
    expect(preview.hostname).toBe('nic-node-07');
    // No agent is connected: the job would wait for it.
    expect(preview.hostOnline).toBe(false);
    expect(preview.iommuGroup).toBe(VF_GROUP);
    expect(preview.activeJobId).toBeNull();
    expect(preview.previewHash).toMatch(/^[0-9a-f]{64}$/);
    const steps = preview.plan?.steps ?? [];
    expect(steps.map((s) => s.action)).toEqual([
      'modprobe',
      'set-override',
      'unbind',
      'probe',
      'verify-driver',
    ]);
    expect(steps[0]).toMatchObject({ action: 'modprobe', module: 'mlx5_vfio_pci' });
    expect(steps[1]).toMatchObject({ action: 'set-override', value: 'mlx5_vfio_pci' });
    expect(preview.plan?.preconditions).toEqual([
      { address: VF, driver: 'mlx5_core', driverOverride: null },
    ]);
    expect(preview.blastRadius.map((b) => b.address)).toEqual([VF]);
    // Same stored state, same hash: it is what the operator acknowledges.
    const again = await previewJob(db, { hostId: nic.hostId, address: '41:00.2', target: 'vfio' });
    expect(again.address).toBe(VF);
    expect(again.previewHash).toBe(preview.previewHash);
  });

  it('says not-found for an unknown host or device and bad-request for a malformed one', async () => {
    const unknownHost = '00000000-0000-4000-8000-000000000000';
    expect(
      (await serverError(previewJob(db, { hostId: unknownHost, address: VF, target: 'vfio' })))
        .code,
    ).toBe('not-found');
    const noDevice = await serverError(
      previewJob(db, { hostId: nic.hostId, address: '0000:99:00.0', target: 'vfio' }),
    );
    expect(noDevice.code).toBe('not-found');
    expect(noDevice.message).toContain('0000:99:00.0');
    expect(
      (await serverError(previewJob(db, { hostId: nic.hostId, address: 'nope', target: 'vfio' })))
        .code,
    ).toBe('bad-request');
  });

  it('refuses a host-critical device in the preview and in create, creating nothing', async () => {
    const preview = await previewJob(db, {
      hostId: critical.hostId,
      address: ROOT_NVME,
      target: 'vfio',
    });
    expect(preview.ok).toBe(false);
    expect(preview.plan).toBeNull();
    expect(preview.refusal?.code).toBe('blocked');
    expect(preview.refusal?.reasons.map((r) => r.code)).toContain('host-critical');
    const error = await serverError(
      createJob(db, actor, {
        hostId: critical.hostId,
        address: ROOT_NVME,
        target: 'vfio',
        acknowledge: true,
        previewHash: preview.previewHash,
        force: true,
      }),
    );
    expect(error.code).toBe('conflict');
    expect(error.message).toMatch(/^blocked: /);
    expect(await db.select().from(jobs).where(eq(jobs.hostId, critical.hostId))).toEqual([]);
  });

  it('creates a queued job from the current preview only, with its event and audit row', async () => {
    const input = { hostId: nic.hostId, address: VF, target: 'vfio' as const };
    const preview = await previewJob(db, input);
    const stale = await serverError(
      createJob(db, actor, { ...input, acknowledge: true, previewHash: 'f'.repeat(64) }),
    );
    expect(stale.code).toBe('conflict');
    expect(stale.message).toContain('preview again');
    const acknowledged = await serverError(
      // A caller that bypasses the router's z.literal(true).
      createJob(db, actor, {
        ...input,
        acknowledge: false as unknown as true,
        previewHash: preview.previewHash,
      }),
    );
    expect(acknowledged.code).toBe('bad-request');

    const woken: string[] = [];
    const job = await createJob(
      db,
      actor,
      { ...input, acknowledge: true, previewHash: preview.previewHash, deadlineSeconds: 600 },
      (hostId) => woken.push(hostId),
    );
    expect(woken).toEqual([nic.hostId]);
    expect(job).toMatchObject({
      hostId: nic.hostId,
      hostname: 'nic-node-07',
      iommuGroup: VF_GROUP,
      address: VF,
      target: 'vfio',
      force: false,
      state: 'queued',
      createdBy: actor.userId,
      createdByName: 'op',
      attempt: 0,
      canaryOf: null,
      bulkId: null,
      cancelRequested: false,
      previewHash: preview.previewHash,
      result: null,
    });
    expect(job.preview).toMatchObject({ previewHash: preview.previewHash, ok: true });
    const deadlineIn = Date.parse(job.deadline) - Date.parse(job.createdAt);
    expect(deadlineIn).toBeGreaterThan(590_000);
    expect(deadlineIn).toBeLessThan(660_000);
    const events = await eventsOf(db, job.id);
    expect(events.map((e) => [e.fromState, e.toState])).toEqual([[null, 'queued']]);
    const audit = await listAudit(db, { limit: 50, action: 'job-created', hostId: nic.hostId });
    const entry = audit.items.find(
      (a) => (a.detail as { jobId?: string } | null)?.jobId === job.id,
    );
    expect(entry).toMatchObject({
      userId: actor.userId,
      username: 'op',
      action: 'job-created',
      hostId: nic.hostId,
      iommuGroup: VF_GROUP,
      address: VF,
    });
    expect(entry?.detail).toMatchObject({
      target: 'vfio',
      force: false,
      driversBefore: [{ address: VF, driver: 'mlx5_core', driverOverride: null }],
    });

    // The preview now names the active job; a second job on the group is a conflict naming it.
    const next = await previewJob(db, input);
    expect(next.activeJobId).toBe(job.id);
    const busy = await serverError(
      createJob(db, actor, { ...input, acknowledge: true, previewHash: next.previewHash }),
    );
    expect(busy.code).toBe('conflict');
    expect(busy.message).toBe(
      `IOMMU group ${VF_GROUP} on nic-node-07 already has an active job ${job.id}`,
    );
    const active = await db
      .select()
      .from(jobs)
      .where(and(eq(jobs.hostId, nic.hostId), eq(jobs.iommuGroup, VF_GROUP)));
    expect(active.map((j) => j.id)).toEqual([job.id]);
  });

  it('recognises the database refusing a second active job in a group (the race backstop)', async () => {
    const [existing] = await db
      .select()
      .from(jobs)
      .where(and(eq(jobs.hostId, nic.hostId), eq(jobs.state, 'queued')));
    if (existing === undefined) throw new Error('the previous test left no queued job');
    let caught: unknown;
    try {
      // What a second server process racing past the pre-check would do.
      await db.insert(jobs).values({
        hostId: existing.hostId,
        iommuGroup: existing.iommuGroup,
        address: existing.address,
        target: 'vfio',
        deadline: new Date(Date.now() + 60_000),
      });
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeDefined();
    expect(isActiveGroupViolation(caught)).toBe(true);
    expect(isActiveGroupViolation(new Error('something else'))).toBe(false);
  });

  it('refuses a preview that went stale when the host reported a changed group', async () => {
    const input = { hostId: nic.hostId, address: OTHER_VF, target: 'vfio' as const };
    const before = await previewJob(db, input);
    // The host's next snapshot: someone set the VF's driver_override by hand meanwhile.
    const changed = structuredClone(nic.snapshot);
    const vf = changed.devices.find((d) => d.address === OTHER_VF);
    if (vf === undefined) throw new Error(`${OTHER_VF} is not in the mlx5-vf scenario`);
    vf.driverOverride = 'mlx5_vfio_pci';
    await reingest(db, nic, changed, 2);
    const after = await previewJob(db, input);
    expect(after.ok).toBe(true);
    expect(after.previewHash).not.toBe(before.previewHash);
    const error = await serverError(
      createJob(db, actor, { ...input, acknowledge: true, previewHash: before.previewHash }),
    );
    expect(error.code).toBe('conflict');
    expect(error.message).toBe('the plan changed since the preview; preview again');
    // The current preview is accepted.
    const job = await createJob(db, actor, {
      ...input,
      acknowledge: true,
      previewHash: after.previewHash,
    });
    expect(job.state).toBe('queued');
  });

  it('cancels a queued job at once, with an event and audit rows; a finished one is a conflict', async () => {
    const [queued] = await db
      .select()
      .from(jobs)
      .where(and(eq(jobs.hostId, nic.hostId), eq(jobs.address, VF), eq(jobs.state, 'queued')));
    if (queued === undefined) throw new Error('no queued job on the VF');
    const notified: string[] = [];
    const view = await cancelJob(db, actor, queued.id, (job) => notified.push(job.id));
    expect(notified).toEqual([]);
    expect(view.state).toBe('cancelled');
    expect(view.reasonCode).toBe('cancelled');
    expect(view.finishedAt).not.toBeNull();
    const events = await eventsOf(db, queued.id);
    expect(events.map((e) => [e.fromState, e.toState])).toEqual([
      [null, 'queued'],
      ['queued', 'cancelled'],
    ]);
    expect(events[1]?.message).toBe('cancelled by op');
    const audit = await listAudit(db, { limit: 200, hostId: nic.hostId });
    const mine = audit.items.filter(
      (a) => (a.detail as { jobId?: string } | null)?.jobId === queued.id,
    );
    expect(mine.map((a) => a.action).sort()).toEqual([
      'job-cancelled',
      'job-created',
      'job-finished',
    ]);
    expect(mine.find((a) => a.action === 'job-cancelled')).toMatchObject({
      userId: actor.userId,
      username: 'op',
      iommuGroup: VF_GROUP,
      address: VF,
    });
    expect(mine.find((a) => a.action === 'job-finished')?.detail).toMatchObject({
      state: 'cancelled',
      driversBefore: [{ address: VF, driver: 'mlx5_core', driverOverride: null }],
      driversAfter: null,
    });

    const again = await serverError(cancelJob(db, actor, queued.id));
    expect(again.code).toBe('conflict');
    expect(again.message).toContain('cancelled');
    expect((await eventsOf(db, queued.id)).length).toBe(2);
    expect(
      (await serverError(cancelJob(db, actor, '00000000-0000-4000-8000-000000000000'))).code,
    ).toBe('not-found');

    // The group is free again: a new job for it is accepted.
    const preview = await previewJob(db, { hostId: nic.hostId, address: VF, target: 'vfio' });
    expect(preview.activeJobId).toBeNull();
  });

  it('asks the agent to cancel a dispatched job, once', async () => {
    const preview = await previewJob(db, { hostId: nic.hostId, address: VF, target: 'vfio' });
    const job = await createJob(db, actor, {
      hostId: nic.hostId,
      address: VF,
      target: 'vfio',
      acknowledge: true,
      previewHash: preview.previewHash,
    });
    const dispatched = await transitionJob(
      db,
      job.id,
      ['queued'],
      'dispatched',
      { message: 'delivered' },
      { dispatchedAt: new Date(), leaseOwner: 'test', attempt: 1 },
    );
    expect(dispatched?.state).toBe('dispatched');
    const notified: JobRow[] = [];
    const view = await cancelJob(db, actor, job.id, (row) => notified.push(row));
    expect(view.state).toBe('dispatched');
    expect(view.cancelRequested).toBe(true);
    expect(notified.map((r) => [r.id, r.state])).toEqual([[job.id, 'dispatched']]);
    expect(notified[0]?.cancelRequestedAt).toBeInstanceOf(Date);
    // Asking again changes nothing and does not re-notify.
    await cancelJob(db, actor, job.id, (row) => notified.push(row));
    expect(notified.length).toBe(1);
    const events = await eventsOf(db, job.id);
    expect(events.map((e) => [e.fromState, e.toState, e.message])).toEqual([
      [null, 'queued', 'created by op'],
      ['queued', 'dispatched', 'delivered'],
      ['dispatched', 'dispatched', 'cancel requested by op'],
    ]);
    const audit = await listAudit(db, { limit: 10, action: 'job-cancel-requested' });
    expect(audit.items.map((a) => (a.detail as { jobId: string }).jobId)).toEqual([job.id]);
  });

  it('moves a job only from the states given; a wrong one returns null and writes nothing', async () => {
    const [job] = await db
      .select()
      .from(jobs)
      .where(and(eq(jobs.hostId, nic.hostId), eq(jobs.state, 'dispatched')));
    if (job === undefined) throw new Error('no dispatched job');
    const before = (await eventsOf(db, job.id)).length;
    expect(await transitionJob(db, job.id, ['queued'], 'dispatched', { message: 'x' })).toBeNull();
    expect(
      await transitionJob(db, job.id, ['running', 'queued'], 'succeeded', { message: 'x' }),
    ).toBeNull();
    expect((await jobRow(db, job.id)).state).toBe('dispatched');
    expect((await eventsOf(db, job.id)).length).toBe(before);

    // From one of several: the event names the state it actually left.
    const running = await transitionJob(
      db,
      job.id,
      ['queued', 'dispatched'],
      'running',
      { message: 'accepted', data: { by: 'agent' } },
      { acceptedAt: new Date() },
    );
    expect(running?.state).toBe('running');
    await recordJobEvent(db, job.id, 'running', 'step 0 ok', { index: 0 });
    const result = jobResult(job.id, {
      before: [{ address: VF, driver: 'mlx5_core', driverOverride: null }],
      after: [{ address: VF, driver: 'mlx5_vfio_pci', driverOverride: 'mlx5_vfio_pci' }],
    });
    const finished = await db.transaction(async (tx) => {
      const row = await transitionJob(
        tx,
        job.id,
        ['running'],
        'succeeded',
        { message: 'succeeded' },
        { result, ...terminalStateOf(result) },
      );
      if (row !== null) await afterJobTerminal(tx, row);
      return row;
    });
    expect(finished?.finishedAt).toBeInstanceOf(Date);
    const events = await eventsOf(db, job.id);
    expect(events.slice(before).map((e) => [e.fromState, e.toState, e.message, e.data])).toEqual([
      ['dispatched', 'running', 'accepted', { by: 'agent' }],
      ['running', 'running', 'step 0 ok', { index: 0 }],
      ['running', 'succeeded', 'succeeded', null],
    ]);
    const audit = await listAudit(db, { limit: 10, action: 'job-finished', hostId: nic.hostId });
    expect(audit.items[0]?.detail).toMatchObject({
      jobId: job.id,
      state: 'succeeded',
      result: 'succeeded',
      driversAfter: [{ address: VF, driver: 'mlx5_vfio_pci', driverOverride: 'mlx5_vfio_pci' }],
    });
    await expect(
      transitionJob(db, job.id, ['succeeded'], 'failed', { message: 'x' }, { bogus: 1 }),
    ).rejects.toThrow(/bogus/);
  });

  it('gets a job with its events; an unknown one is not-found', async () => {
    const [row] = await db.select().from(jobs).where(eq(jobs.state, 'succeeded'));
    if (row === undefined) throw new Error('no finished job');
    const job = await getJob(db, row.id);
    expect(job.id).toBe(row.id);
    expect(job.events.map((e) => e.toState)).toEqual([
      'queued',
      'dispatched',
      'dispatched',
      'running',
      'running',
      'succeeded',
    ]);
    const missing = await serverError(getJob(db, '00000000-0000-4000-8000-000000000000'));
    expect(missing.code).toBe('not-found');
    expect((await serverError(getJob(db, 'not-a-uuid'))).code).toBe('bad-request');
  });

  it('lists jobs newest first over many pages, complete and in order, with filters', async () => {
    const host = await ingestScenario(db, tmp, 'dual-gpu', { hostname: 'page-node' });
    const deadline = new Date(Date.now() + 3_600_000);
    // 23 finished jobs: one statement for 12 (they share created_at, as a bulk's jobs do), then 11
    // one by one; the id breaks the tie.
    const make = (i: number) => ({
      hostId: host.hostId,
      iommuGroup: 21,
      address: '0000:17:00.0',
      target: 'vfio' as const,
      state: i % 2 === 0 ? ('succeeded' as const) : ('failed' as const),
      deadline,
    });
    await db.insert(jobs).values(Array.from({ length: 12 }, (_, i) => make(i)));
    for (let i = 12; i < 23; i++) await db.insert(jobs).values(make(i));
    const expected = await db
      .select({ id: jobs.id })
      .from(jobs)
      .where(eq(jobs.hostId, host.hostId))
      .orderBy(desc(jobs.createdAt), desc(jobs.id));
    expect(expected.length).toBe(23);

    const seen: JobView[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { items: JobView[]; nextCursor: string | null } = await listJobs(db, {
        hostId: host.hostId,
        limit: 5,
        cursor,
      });
      expect(page.items.length).toBeLessThanOrEqual(5);
      seen.push(...page.items);
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== null && pages < 20);
    expect(pages).toBe(5);
    expect(seen.map((j) => j.id)).toEqual(expected.map((j) => j.id));
    expect(seen.every((j) => j.hostname === 'page-node')).toBe(true);

    const failed = await listJobs(db, { hostId: host.hostId, state: ['failed'], limit: 200 });
    expect(failed.items.length).toBe(11);
    expect(failed.nextCursor).toBeNull();
    expect(failed.items.every((j) => j.state === 'failed')).toBe(true);
    // Across hosts: everything this database holds, newest first.
    const all = await listJobs(db, { limit: 200 });
    const total = await db.select({ id: jobs.id }).from(jobs);
    expect(all.items.length).toBe(total.length);

    expect((await serverError(listJobs(db, { limit: 0 }))).code).toBe('bad-request');
    expect((await serverError(listJobs(db, { limit: 201 }))).code).toBe('bad-request');
    expect((await serverError(listJobs(db, { limit: 5, cursor: 'garbage' }))).code).toBe(
      'bad-request',
    );
  });

  it('creates a bulk per IOMMU group on the labelled hosts only, behind a canary', async () => {
    // Three GPU hosts of the same kind; only two carry pool=train. Each has two RTX 3090 groups.
    const b = await ingestScenario(db, tmp, 'dual-gpu', {
      hostname: 'gpu-b',
      labels: { pool: 'train', rack: '7' },
    });
    const a = await ingestScenario(db, tmp, 'dual-gpu', {
      hostname: 'gpu-a',
      labels: { pool: 'train' },
    });
    const other = await ingestScenario(db, tmp, 'dual-gpu', {
      hostname: 'gpu-c',
      labels: { pool: 'infer' },
    });
    const input = {
      vendorId: '10DE',
      deviceId: '2204',
      labels: { pool: 'train' },
      target: 'vfio' as const,
    };
    const preview = await previewBulk(db, input);
    expect(preview.entries.map((e) => [e.hostname, e.iommuGroup, e.address])).toEqual([
      ['gpu-a', 21, '0000:17:00.0'],
      ['gpu-a', 31, '0000:31:00.0'],
      ['gpu-b', 21, '0000:17:00.0'],
      ['gpu-b', 31, '0000:31:00.0'],
    ]);
    // The whole group moves: the GPU's audio function comes along.
    expect(preview.entries[0]?.plan?.devices).toEqual(['0000:17:00.0', '0000:17:00.1']);
    expect(preview.hosts).toBe(2);
    expect(preview.offlineHosts).toBe(2);
    expect(preview.skipped).toEqual([]);
    expect(preview.entries.some((e) => e.hostId === other.hostId)).toBe(false);
    // A second label narrows it to gpu-b.
    const narrow = await previewBulk(db, { ...input, labels: { pool: 'train', rack: '7' } });
    expect(narrow.entries.map((e) => e.hostname)).toEqual(['gpu-b', 'gpu-b']);

    const woken: string[] = [];
    const bulk = await createBulk(
      db,
      actor,
      { ...input, canary: true, acknowledge: true, previewHash: preview.previewHash },
      (hostId) => woken.push(hostId),
    );
    expect(woken.sort()).toEqual([a.hostId, b.hostId].sort());
    expect(bulk.jobs.length).toBe(4);
    const [canary, ...dependents] = bulk.jobs;
    expect(canary?.id).toBe(bulk.canaryJobId);
    expect(canary).toMatchObject({ hostname: 'gpu-a', canaryOf: null, state: 'queued' });
    for (const job of dependents) {
      expect(job).toMatchObject({
        canaryOf: bulk.canaryJobId,
        state: 'queued',
        bulkId: bulk.bulkId,
      });
    }
    expect(bulk.jobs.every((j) => j.bulkId === bulk.bulkId)).toBe(true);
    const listed = await listJobs(db, { bulkId: bulk.bulkId, limit: 200 });
    expect(listed.items.map((j) => j.id).sort()).toEqual(bulk.jobs.map((j) => j.id).sort());
    const bulkAudit = await listAudit(db, { limit: 10, action: 'bulk-created' });
    expect(bulkAudit.items[0]?.detail).toMatchObject({
      bulkId: bulk.bulkId,
      canary: true,
      canaryJobId: bulk.canaryJobId,
      vendorId: '10de',
      deviceId: '2204',
    });
    const perHost = await listAudit(db, { limit: 10, action: 'job-created', hostId: b.hostId });
    expect(perHost.items.length).toBe(2);

    // The groups are taken now: a new preview skips them, and the old hash is stale.
    const after = await previewBulk(db, input);
    expect(after.entries).toEqual([]);
    expect(after.skipped.map((s) => s.code)).toEqual([
      'active-job',
      'active-job',
      'active-job',
      'active-job',
    ]);
    const stale = await serverError(
      createBulk(db, actor, {
        ...input,
        canary: false,
        acknowledge: true,
        previewHash: preview.previewHash,
      }),
    );
    expect(stale.code).toBe('conflict');
    const nothing = await serverError(
      createBulk(db, actor, {
        ...input,
        canary: false,
        acknowledge: true,
        previewHash: after.previewHash,
      }),
    );
    expect(nothing.code).toBe('conflict');
    expect(nothing.message).toContain('4 skipped');

    // The canary fails on its agent: every dependent still queued is cancelled, 'canary-failed'.
    if (canary === undefined) throw new Error('no canary');
    const failedResult = jobResult(canary.id, {
      status: 'rolled_back',
      reason: { code: 'step-failed', message: 'probe failed; rolled back', reasons: [] },
      kernelError: { errno: 'ENODEV', message: 'No such device' },
      before: [{ address: '0000:17:00.0', driver: 'nvidia', driverOverride: null }],
      after: [{ address: '0000:17:00.0', driver: 'nvidia', driverOverride: null }],
    });
    await db.transaction(async (tx) => {
      await transitionJob(tx, canary.id, ['queued'], 'dispatched', { message: 'delivered' });
      const row = await transitionJob(
        tx,
        canary.id,
        ['dispatched', 'running'],
        terminalStateOf(failedResult).state,
        { message: 'rolled back' },
        { result: failedResult, ...terminalStateOf(failedResult) },
      );
      if (row === null) throw new Error('the canary did not move');
      await afterJobTerminal(tx, row);
    });
    for (const job of dependents) {
      const row = await jobRow(db, job.id);
      expect(row.state).toBe('cancelled');
      expect(row.reasonCode).toBe('canary-failed');
      expect(row.reasonMessage).toContain(canary.id);
      const events = await eventsOf(db, job.id);
      expect(events.map((e) => [e.fromState, e.toState])).toEqual([
        [null, 'queued'],
        ['queued', 'cancelled'],
      ]);
    }
    const finished = await listAudit(db, { limit: 50, action: 'job-finished' });
    const byJob = new Map(
      finished.items.map((f) => [(f.detail as { jobId: string }).jobId, f.detail]),
    );
    expect(byJob.get(canary.id)).toMatchObject({
      state: 'rolled_back',
      reasonCode: 'step-failed',
      result: 'rolled_back',
      driversAfter: [{ address: '0000:17:00.0', driver: 'nvidia', driverOverride: null }],
    });
    for (const job of dependents) {
      expect(byJob.get(job.id)).toMatchObject({ state: 'cancelled', reasonCode: 'canary-failed' });
    }
    // The groups are free again.
    expect((await previewBulk(db, input)).entries.length).toBe(4);
  });

  it('bulk back to the host takes the groups a vfio driver holds, on the hosts named', async () => {
    const bound = await ingestScenario(db, tmp, 'vfio-bound', { hostname: 'bound-node' });
    const input = { vendorId: '10de', deviceId: '2204', hostIds: [bound.hostId] };
    // Bound to vfio-pci already: nothing is ready to move to vfio.
    expect((await previewBulk(db, { ...input, target: 'vfio' })).entries).toEqual([]);
    const preview = await previewBulk(db, { ...input, target: 'host' });
    expect(preview.entries.map((e) => [e.hostname, e.iommuGroup, e.matched])).toEqual([
      ['bound-node', 21, ['0000:17:00.0']],
    ]);
    expect(preview.entries[0]?.plan?.devices).toEqual(['0000:17:00.0', '0000:17:00.1']);
    expect(preview.entries[0]?.plan?.steps.some((s) => s.action === 'unbind')).toBe(true);
    expect((await previewBulk(db, { ...input, hostIds: [], target: 'host' })).entries).toEqual([]);
    const bulk = await createBulk(db, actor, {
      ...input,
      target: 'host',
      canary: false,
      acknowledge: true,
      previewHash: preview.previewHash,
    });
    expect(bulk.canaryJobId).toBeNull();
    expect(bulk.jobs.map((j) => [j.hostname, j.iommuGroup, j.target, j.canaryOf])).toEqual([
      ['bound-node', 21, 'host', null],
    ]);
    expect(
      (await serverError(previewBulk(db, { ...input, vendorId: '10d', target: 'host' }))).code,
    ).toBe('bad-request');
  });

  it('pages through the audit log newest first, without gaps', async () => {
    const all: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: Awaited<ReturnType<typeof listAudit>> = await listAudit(db, { limit: 3, cursor });
      all.push(...page.items.map((a) => a.id));
      cursor = page.nextCursor;
      pages++;
    } while (cursor !== null && pages < 200);
    const ids = all.map(Number);
    expect(ids).toEqual([...ids].sort((x, y) => y - x));
    expect(new Set(ids).size).toBe(ids.length);
    const everything = await listAudit(db, { limit: 200 });
    expect(all).toEqual(everything.items.map((a) => a.id));
    expect((await serverError(listAudit(db, { limit: 5, cursor: 'x' }))).code).toBe('bad-request');
  });
});
