import { eq } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import {
  ACTIVE_JOB_STATES,
  type Database,
  hosts,
  JOB_STATES,
  type JobState,
  jobEvents,
  jobs,
  type NewJobRow,
  users,
} from '../src/index';
import { drivers, inRollback, rejectsWithState, useMigratedDb } from './harness';

const UNIQUE_VIOLATION = '23505';
const CHECK_VIOLATION = '23514';

async function newHost(tx: Database, agentId: string): Promise<string> {
  const [row] = await tx.insert(hosts).values({ agentId, hostname: agentId }).returning();
  if (!row) throw new Error('host insert returned nothing');
  return row.id;
}

function job(hostId: string, iommuGroup: number, state: JobState = 'queued'): NewJobRow {
  return {
    hostId,
    iommuGroup,
    address: '0000:3b:00.0',
    target: 'vfio' as const,
    state,
    deadline: new Date(Date.now() + 600_000),
  };
}

/** Inserts in a savepoint, so a refused insert does not abort the test's transaction. */
function insertJob(tx: Database, values: NewJobRow) {
  return tx.transaction(async (sp) => {
    const [row] = await sp.insert(jobs).values(values).returning();
    if (!row) throw new Error('job insert returned nothing');
    return row;
  });
}

describe.each(drivers)('jobs on %s', (driver) => {
  const handle = useMigratedDb(driver);

  it.each(ACTIVE_JOB_STATES)('refuses a second active job for a group that has a %s one', (state) =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'agent-1');
      await insertJob(tx, job(hostId, 12, state));
      for (const second of ACTIVE_JOB_STATES) {
        expect(await rejectsWithState(insertJob(tx, job(hostId, 12, second)))).toBe(
          UNIQUE_VIOLATION,
        );
      }
    }),
  );

  it('allows a new job once the active one finished, and any number of finished ones', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'agent-1');
      const first = await insertJob(tx, job(hostId, 12));
      await tx
        .update(jobs)
        .set({ state: 'succeeded', finishedAt: new Date() })
        .where(eq(jobs.id, first.id));
      const second = await insertJob(tx, job(hostId, 12));
      expect(second.state).toBe('queued');

      for (const state of JOB_STATES.filter((s) => !ACTIVE_JOB_STATES.some((a) => a === s))) {
        await insertJob(tx, job(hostId, 12, state));
      }
      const rows = await tx.select().from(jobs).where(eq(jobs.hostId, hostId));
      expect(rows).toHaveLength(2 + 5);
    }));

  it('keeps groups and hosts apart: the same group number on another host is another group', () =>
    inRollback(handle().db, async (tx) => {
      const hostA = await newHost(tx, 'agent-a');
      const hostB = await newHost(tx, 'agent-b');
      await insertJob(tx, job(hostA, 12));
      await insertJob(tx, job(hostA, 13));
      await insertJob(tx, job(hostB, 12));
    }));

  it('refuses moving a second job of the group back to an active state', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'agent-1');
      const done = await insertJob(tx, job(hostId, 12, 'failed'));
      await insertJob(tx, job(hostId, 12, 'running'));
      const retry = tx.transaction((sp) =>
        sp.update(jobs).set({ state: 'queued' }).where(eq(jobs.id, done.id)),
      );
      expect(await rejectsWithState(retry)).toBe(UNIQUE_VIOLATION);
    }));

  it('refuses values outside the closed sets (check constraints)', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'agent-1');
      const bogusState = tx.transaction((sp) =>
        sp.execute(
          // Raw SQL: the TypeScript types would not let the bogus value through at all.
          `insert into jobs (host_id, iommu_group, address, target, state, deadline)
           values ('${hostId}', 1, '0000:00:01.0', 'vfio', 'exploded', now())`,
        ),
      );
      expect(await rejectsWithState(bogusState)).toBe(CHECK_VIOLATION);
      const bogusRole = tx.transaction((sp) =>
        sp.execute(`insert into users (username, password_hash, role) values ('x', 'h', 'root')`),
      );
      expect(await rejectsWithState(bogusRole)).toBe(CHECK_VIOLATION);
    }));

  it('records job events and deletes them with the job', () =>
    inRollback(handle().db, async (tx) => {
      const hostId = await newHost(tx, 'agent-1');
      const [user] = await tx
        .insert(users)
        .values({ username: 'op', passwordHash: 'scrypt$...', role: 'operator' })
        .returning();
      const created = await insertJob(tx, { ...job(hostId, 12), createdBy: user?.id });
      await tx.insert(jobEvents).values([
        { jobId: created.id, toState: 'queued' },
        { jobId: created.id, fromState: 'queued', toState: 'dispatched', data: { lease: 30 } },
      ]);
      const events = await tx
        .select()
        .from(jobEvents)
        .where(eq(jobEvents.jobId, created.id))
        .orderBy(jobEvents.id);
      expect(events.map((event) => event.toState)).toEqual(['queued', 'dispatched']);
      expect(events[1]?.id).toBeGreaterThan(events[0]?.id ?? Number.POSITIVE_INFINITY);

      await tx.delete(jobs).where(eq(jobs.id, created.id));
      expect(await tx.select().from(jobEvents)).toEqual([]);
    }));
});
