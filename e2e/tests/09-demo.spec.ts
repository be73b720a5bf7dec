// `npm run demo` (scripts/demo.mjs) as a newcomer runs it, cut down to three agents on a free
// port: it comes up with every agent online, and SIGTERM stops it all and removes its trees.
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { recordPid, repoRoot, spawnChild, waitFor } from '../src/processes';
import { expect, test } from '../src/test';

const demoTrees = () => readdirSync(tmpdir()).filter((name) => name.startsWith('vfio-fleet-demo-'));

test('npm run demo -- --agents 3 --port 0 shows three hosts online and stops cleanly', async ({
  fleet,
}, testInfo) => {
  test.skip(testInfo.project.name !== 'pglite', 'the demo runs on its own PGlite: once is enough');
  const dataDir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-e2e-demo-data-'));
  const treesBefore = new Set(demoTrees());
  const env: NodeJS.ProcessEnv = { ...process.env, VFIO_FLEET_DATA_DIR: dataDir };
  delete env.DATABASE_URL;
  delete env.ADMIN_PASSWORD;
  const demo = spawnChild(process.execPath, ['scripts/demo.mjs', '--agents', '3', '--port', '0'], {
    cwd: repoRoot,
    env,
  });
  recordPid(fleet.pidsFile, demo.pid, 'scripts/demo.mjs');
  try {
    const url = await waitFor(
      'the demo to print its URL',
      () => /vfio-fleet demo: (http:\/\/localhost:\d+)/.exec(demo.output())?.[1],
      180_000,
      () => demo.output(),
    );
    expect(demo.output()).toContain('admin / demo-admin-password');
    const health = await waitFor(
      'three hosts online',
      async () => {
        const res = await fetch(`${url}/api/health`);
        const body = (await res.json()) as { hosts?: { online?: number } };
        return body.hosts?.online === 3 ? body : undefined;
      },
      90_000,
      () => demo.output(),
    );
    expect(health).toMatchObject({ ok: true, hosts: { online: 3, offline: 0 } });
    // Its trees are there while it runs...
    expect(demoTrees().filter((name) => !treesBefore.has(name))).toHaveLength(1);

    const code = await demo.stop(30_000);
    expect(code, demo.output()).toBe(0);
    // ...and gone, with the server, once it stopped.
    expect(demoTrees().filter((name) => !treesBefore.has(name))).toEqual([]);
    await expect(fetch(`${url}/api/health`)).rejects.toThrow();
  } finally {
    // SIGTERM first: the demo stops its own server and agents.
    await demo.stop(30_000);
    await rm(dataDir, { recursive: true, force: true });
  }
});
