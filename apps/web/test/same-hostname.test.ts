// Hosts that report the same hostname (a cloned image, a reused name) looked the same in the
// hosts list and on their pages. Each now carries a short id that tells it apart: its machine-id's
// start, or its host id's where the machine-id does not help; a hostname of its own gets none.
import { hosts } from '@vfio-fleet/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getHost, listHosts } from '../src/fleet/hosts';
import { drivers, openTestDb, type TestDb } from './helpers/harness';

describe.each(drivers)('hosts with one hostname (%s)', (driver) => {
  let testDb: TestDb;
  const ids: Record<string, string> = {};
  beforeAll(async () => {
    testDb = await openTestDb(driver);
    const rows = [
      { key: 'a', hostname: 'gpu-01', machineId: `aaaaaaaa${'1'.repeat(24)}` },
      { key: 'b', hostname: 'gpu-01', machineId: `bbbbbbbb${'2'.repeat(24)}` },
      { key: 'c', hostname: 'gpu-02', machineId: `cccccccc${'3'.repeat(24)}` },
      // A cloned image: the same machine-id, so only the host id tells them apart.
      { key: 'd', hostname: 'clone', machineId: `dddddddd${'4'.repeat(24)}` },
      { key: 'e', hostname: 'clone', machineId: `dddddddd${'4'.repeat(24)}` },
      { key: 'f', hostname: 'clone', machineId: null },
    ];
    for (const row of rows) {
      const [inserted] = await testDb.db
        .insert(hosts)
        .values({ agentId: `agent-${row.key}`, hostname: row.hostname, machineId: row.machineId })
        .returning({ id: hosts.id });
      ids[row.key] = inserted?.id ?? '';
    }
  });
  afterAll(async () => {
    await testDb?.close();
  });

  const hostId = (key: string) => (ids[key] ?? '').slice(0, 8);

  it('hosts.list gives each of them a short id, and a host with its own hostname none', async () => {
    const { items } = await listHosts(testDb.db, { sort: 'hostname', dir: 'asc', limit: 50 });
    const shown = Object.fromEntries(items.map((h) => [h.id, h.distinguisher]));
    expect(shown).toEqual({
      [ids.a ?? '']: 'machine-id aaaaaaaa',
      [ids.b ?? '']: 'machine-id bbbbbbbb',
      [ids.c ?? '']: null,
      [ids.d ?? '']: `host id ${hostId('d')}`,
      [ids.e ?? '']: `host id ${hostId('e')}`,
      [ids.f ?? '']: `host id ${hostId('f')}`,
    });
    // Across pages too: the twin need not be on the same page.
    const first = await listHosts(testDb.db, {
      sort: 'hostname',
      dir: 'asc',
      limit: 1,
      search: 'gpu-01',
    });
    expect(first.items[0]?.distinguisher).toMatch(/^machine-id (aaaaaaaa|bbbbbbbb)$/);
  });

  it('the host page (hosts.get) says the same', async () => {
    expect((await getHost(testDb.db, ids.b ?? '')).distinguisher).toBe('machine-id bbbbbbbb');
    expect((await getHost(testDb.db, ids.c ?? '')).distinguisher).toBeNull();
  });
});
