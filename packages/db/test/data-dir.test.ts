// The PGlite data directory: private (0700 directories, 0600 files) whether fresh or left
// world-readable by an earlier version, and open in one process at a time. PGlite only: PostgreSQL
// keeps its own files. Two real server processes on one directory: apps/web/test/data-dir.test.ts.
import { spawn } from 'node:child_process';
import { chmod, lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { identityOf } from '@vfio-fleet/local-state';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, DATA_DIR_LOCK_FILE, hosts } from '../src/index';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'vf-db-data-dir-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Every mode under `dir` (itself included), by kind: `{ d700: 27, f600: 972 }`. */
async function modes(dir: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  const walk = async (entry: string) => {
    const info = await lstat(entry);
    const key = `${info.isDirectory() ? 'd' : 'f'}${(info.mode & 0o777).toString(8)}`;
    counts[key] = (counts[key] ?? 0) + 1;
    if (info.isDirectory()) {
      for (const name of await readdir(entry)) await walk(path.join(entry, name));
    }
  };
  await walk(dir);
  return counts;
}

/** chmod -R as PGlite (and this package before) left a data directory: 0755 / 0666. */
async function makeWorldReadable(dir: string): Promise<number> {
  let n = 0;
  const walk = async (entry: string) => {
    const info = await lstat(entry);
    await chmod(entry, info.isDirectory() ? 0o755 : 0o666);
    n += 1;
    if (info.isDirectory()) {
      for (const name of await readdir(entry)) await walk(path.join(entry, name));
    }
  };
  await walk(dir);
  return n;
}

// One directory through all the cases, in order: creating a PGlite database is the slow part.
describe('the PGlite data directory', () => {
  let dir: string;
  beforeAll(() => {
    dir = path.join(tmp, 'data');
  });

  it('is created 0700 with 0600 files, and stays so through a migration and a close', async () => {
    const notices: string[] = [];
    const handle = await createDb({ dataDir: dir, env: {}, onNotice: (m) => notices.push(m) });
    try {
      await handle.migrate();
      expect(Object.keys(await modes(dir)).sort()).toEqual(['d700', 'f600']);
    } finally {
      await handle.close();
    }
    expect(Object.keys(await modes(dir)).sort()).toEqual(['d700', 'f600']);
    expect(notices).toEqual([]);
  });

  it('fixes one left 0755/0666 at open, and says how many it fixed', async () => {
    const first = await createDb({ dataDir: dir, env: {} });
    await first.db.insert(hosts).values({ agentId: 'agent-1', hostname: 'gpu-01' });
    await first.close();
    const loosened = await makeWorldReadable(dir);

    const notices: string[] = [];
    const second = await createDb({ dataDir: dir, env: {}, onNotice: (m) => notices.push(m) });
    try {
      expect(notices).toEqual([
        `fixed modes of ${loosened} files in ${dir}: other users could read or write them (now 0700 directories, 0600 files)`,
      ]);
      expect(Object.keys(await modes(dir)).sort()).toEqual(['d700', 'f600']);
      expect(await second.db.select({ hostname: hosts.hostname }).from(hosts)).toEqual([
        { hostname: 'gpu-01' },
      ]);
    } finally {
      await second.close();
    }
  });

  it('refuses a second opener, naming the directory and the pid that has it', async () => {
    const first = await createDb({ dataDir: dir, env: {} });
    try {
      await expect(createDb({ dataDir: dir, env: {} })).rejects.toThrow(
        `the PGlite database in ${dir} is in use by pid ${process.pid}`,
      );
    } finally {
      await first.close();
    }
  });

  it('takes over the lock of a process that died without releasing it', async () => {
    const dead = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
    const pid = dead.pid ?? 0;
    await new Promise((resolve) => dead.once('exit', resolve));
    const owner = { ...identityOf(), pid, acquiredAt: new Date().toISOString(), info: {} };
    await writeFile(path.join(dir, DATA_DIR_LOCK_FILE), JSON.stringify(owner));
    const handle = await createDb({ dataDir: dir, env: {} });
    await handle.close();
  });
});
