// LISTEN/NOTIFY on both drivers: delivery to a listener of the same handle, at commit only (never
// from a rolled-back transaction), unlisten, bad channel names; on PostgreSQL also between two
// handles, as between two server processes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DbHandle, notify } from '../src/index';
import { createScratch, drivers, type Scratch } from './harness';

/** Waits until `check` holds, polling; false after `timeoutMs`. */
async function eventually(check: () => boolean, timeoutMs = 10_000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

describe.each(drivers)('listen/notify (%s)', (driver) => {
  let scratch: Scratch;
  let handle: DbHandle;
  beforeAll(async () => {
    scratch = await createScratch(driver);
    handle = await scratch.open();
  });
  afterAll(async () => {
    await handle.close();
    await scratch.dispose();
  });

  it('delivers payloads to listeners of the channel, at commit, until unlisten', async () => {
    const heard: string[] = [];
    const other: string[] = [];
    const unlisten = await handle.listen('vf_test_a', (payload) => heard.push(payload));
    const unlistenOther = await handle.listen('vf_test_b', (payload) => other.push(payload));

    await notify(handle.db, 'vf_test_a', 'host-1');
    expect(await eventually(() => heard.includes('host-1'))).toBe(true);

    // Sent inside a transaction: heard after commit, never when it rolls back.
    await handle.db.transaction(async (tx) => {
      await notify(tx, 'vf_test_a', 'committed');
    });
    await handle.db
      .transaction(async (tx) => {
        await notify(tx, 'vf_test_a', 'rolled-back');
        throw new Error('roll back');
      })
      .catch(() => undefined);
    await notify(handle.db, 'vf_test_a', 'after');
    expect(await eventually(() => heard.includes('after'))).toBe(true);
    expect(heard).toContain('committed');
    expect(heard).not.toContain('rolled-back');
    expect(other).toEqual([]);

    await unlisten();
    await unlisten(); // idempotent
    await notify(handle.db, 'vf_test_a', 'unheard');
    await notify(handle.db, 'vf_test_b', 'marker');
    expect(await eventually(() => other.includes('marker'))).toBe(true);
    expect(heard).not.toContain('unheard');
    await unlistenOther();
  });

  it('refuses channel names that are not plain identifiers, and oversized payloads', async () => {
    await expect(handle.listen('Bad-Channel', () => undefined)).rejects.toThrow(/channel/);
    await expect(notify(handle.db, 'x; drop table jobs', 'p')).rejects.toThrow(/channel/);
    await expect(notify(handle.db, 'vf_test_a', 'x'.repeat(8000))).rejects.toThrow(/payload/);
  });

  it.skipIf(driver !== 'postgres')('reaches a listener on another connection', async () => {
    const second = await scratch.open();
    try {
      const heard: string[] = [];
      const unlisten = await second.listen('vf_test_cross', (payload) => heard.push(payload));
      await notify(handle.db, 'vf_test_cross', 'from-first');
      expect(await eventually(() => heard.includes('from-first'))).toBe(true);
      await unlisten();
    } finally {
      await second.close();
    }
  });
});
