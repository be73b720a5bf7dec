// The job store's bound on refusals: a server can send any number of jobs that are refused, and
// each used to leave a file in the state dir for good.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobOutcome, type JobStatus, JobStore } from '../src/rebind/job-store';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-job-store-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function outcome(jobId: string, status: JobStatus, minute: number): JobOutcome {
  const at = new Date(Date.UTC(2025, 0, 1, 12, minute)).toISOString();
  return {
    jobId,
    status,
    reason: status === 'refused' ? { code: 'needs-force', message: 'x', reasons: [] } : null,
    failedStep: null,
    kernelError: null,
    before: [],
    after: [],
    persistence: null,
    startedAt: at,
    finishedAt: at,
  };
}

/** Every stored outcome file under jobs/, refusals included. */
async function storedFiles(stateDir: string): Promise<string[]> {
  const entries = await readdir(path.join(stateDir, 'jobs'), { recursive: true });
  return entries.filter((name) => name.endsWith('.json')).sort();
}

describe('JobStore', () => {
  it('keeps only the newest refusals, and every outcome that changed the host', async () => {
    const stateDir = path.join(tmp, 'bounded');
    const store = new JobStore(stateDir, 3);
    await store.write(outcome('ran-1', 'succeeded', 0));
    // Written out of order: the oldest by finishedAt go, whatever order they came in.
    for (const minute of [5, 1, 4, 2, 3, 6]) {
      await store.write(outcome(`refused-${minute}`, 'refused', minute));
    }
    await store.write(outcome('ran-2', 'rolled_back', 7));

    expect(await storedFiles(stateDir)).toEqual([
      'ran-1.json',
      'ran-2.json',
      path.join('refused', 'refused-4.json'),
      path.join('refused', 'refused-5.json'),
      path.join('refused', 'refused-6.json'),
    ]);
    // A kept refusal is still the job's stored outcome (a re-sent id gets it, nothing runs).
    expect((await store.read('refused-6'))?.status).toBe('refused');
    expect(await store.read('refused-1')).toBeNull();
    expect((await store.read('ran-1'))?.status).toBe('succeeded');
  });

  it('bounds a flood of refusals: pruned back to the newest N once a quarter more piled up', async () => {
    const stateDir = path.join(tmp, 'flood');
    const store = new JobStore(stateDir, 40);
    const counts: number[] = [];
    for (let i = 0; i < 120; i++) {
      await store.write(outcome(`flood-${i}`, 'refused', i % 60));
      counts.push((await storedFiles(stateDir)).length);
    }
    expect(Math.max(...counts)).toBe(50);
    expect(counts.at(-1)).toBeLessThanOrEqual(50);
    expect(counts.at(50)).toBe(40);
  });
});
