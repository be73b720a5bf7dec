// The single executable on its own: runs with no Node on the PATH, scans like the Node bundle,
// and speaks WebSocket (ws's optional native addons are left out of the bundle).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { constants, readFileSync, realpathSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentVersion, distDir, distFile, readManifest, repoRoot } from './helpers/dist';
import { buildFixtureRoot, runWithoutNode } from './helpers/host-root';

let tmp: string;
let fixtureRoot: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'packaging-exe-'));
  fixtureRoot = await buildFixtureRoot(tmp);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('dist/', () => {
  it('lists the executable and the package with their real checksums and sizes', async () => {
    const manifest = readManifest();
    expect(manifest.version).toBe(agentVersion());
    expect(manifest.files.map((file) => `${file.name} ${file.arch}`).sort()).toEqual([
      `vfio-fleet-agent-${manifest.version}-linux-arm64 arm64`,
      `vfio-fleet-agent-${manifest.version}-linux-x64 x64`,
      `vfio-fleet-agent_${manifest.version}_amd64.deb x64`,
    ]);
    const sums = await readFile(path.join(distDir, 'SHA256SUMS'), 'utf8');
    for (const file of manifest.files) {
      const data = await readFile(path.join(distDir, file.name));
      expect(data.length).toBe(file.size);
      expect(createHash('sha256').update(data).digest('hex')).toBe(file.sha256);
      expect(sums).toContain(`${file.sha256}  ${file.name}\n`);
    }
    const template = await readFile(path.join(distDir, 'install.sh.in'), 'utf8');
    for (const placeholder of [
      'SERVER_URL',
      'AGENT_VERSION',
      'AGENT_FILE',
      'AGENT_SHA256',
      'AGENT_FILE_ARM64',
      'AGENT_SHA256_ARM64',
    ]) {
      expect(template).toContain(`__VFIO_FLEET_${placeholder}__`);
    }
    expect(template).not.toContain('@VFIO_FLEET_AGENT_UNIT@');
  });
});

describe('the single executable', () => {
  it('scans a host with no Node on the PATH, exactly as the Node bundle does', () => {
    const exe = distFile('executable').path;
    expect(
      spawnSync('/bin/sh', ['-c', 'command -v node'], { env: { PATH: '/nonexistent' } }).status,
    ).not.toBe(0);
    const alone = runWithoutNode(exe, ['scan', '--json', '--root', fixtureRoot]);
    expect(alone.status, alone.stderr).toBe(0);
    // No "experimental feature" or require() warnings: stderr is the agent's own.
    expect(alone.stderr).toBe('');
    const viaNode = spawnSync(
      process.execPath,
      [
        path.join(repoRoot, 'apps/agent/dist/vfio-fleet-agent.mjs'),
        'scan',
        '--json',
        '--root',
        fixtureRoot,
      ],
      { encoding: 'utf8', maxBuffer: 64 << 20 },
    );
    expect(viaNode.status, viaNode.stderr).toBe(0);
    expect(withoutTimes(JSON.parse(alone.stdout))).toEqual(
      withoutTimes(JSON.parse(viaNode.stdout)),
    );
    expect(alone.stdout).toContain('"devices"');
  });

  it('runs as its own sysfs writer child (the hidden subcommand the agent re-runs itself with)', async () => {
    const exe = distFile('executable').path;
    const file = path.join(tmp, 'driver_override');
    await writeFile(file, '(null)\n');
    // O_WRONLY|O_TRUNC, as SysfsKernelIo opens an attribute.
    const request = {
      id: 7,
      file,
      flags: constants.O_WRONLY | constants.O_TRUNC,
      value: 'vfio-pci',
    };
    const child = spawnSync(exe, ['__sysfs-writer'], {
      env: { PATH: '/nonexistent' },
      input: `${JSON.stringify(request)}\n`,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(child.status, child.stderr).toBe(0);
    expect(
      child.stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l)),
    ).toEqual([{ kind: 'ready' }, { kind: 'done', id: 7, bytesWritten: 8 }]);
    expect(await readFile(file, 'utf8')).toBe('vfio-pci');
  });

  it('for arm64 (cross-built), scans the same host the same way under qemu-user', () => {
    const exe = distFile('executable', 'arm64').path;
    // An AArch64 ELF executable, stripped: not this machine's node renamed.
    const header = readFileSync(exe).subarray(0, 20);
    expect(header.readUInt16LE(18)).toBe(183);
    // By its path: the agent itself runs with no PATH to find Node (or anything) on.
    const qemu = spawnSync(
      '/usr/bin/qemu-aarch64',
      ['-L', '/usr/aarch64-linux-gnu', exe, 'scan', '--json', '--root', fixtureRoot],
      { env: { PATH: '/nonexistent' }, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 120_000 },
    );
    if (qemu.error !== undefined) {
      throw new Error(
        `cannot run qemu-aarch64 (apt-get install qemu-user libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross): ${qemu.error.message}`,
      );
    }
    expect(qemu.status, qemu.stderr).toBe(0);
    expect(qemu.stderr).toBe('');
    const x64 = runWithoutNode(distFile('executable').path, [
      'scan',
      '--json',
      '--root',
      fixtureRoot,
    ]);
    expect(x64.status, x64.stderr).toBe(0);
    // The host's CPU is read from the fixture tree, not from the machine the agent runs on.
    expect(withoutTimes(JSON.parse(qemu.stdout))).toEqual(withoutTimes(JSON.parse(x64.stdout)));
  });

  // A host with no Node installed at all, not merely none on the PATH: a root holding only the
  // executable and the C libraries it links (chroot needs root, as installing the agent does).
  it.skipIf(process.getuid?.() !== 0)(
    'scans from inside a root that has no Node anywhere: only itself and libc, libstdc++',
    async () => {
      const exe = distFile('executable').path;
      const root = path.join(tmp, 'no-node-root');
      await mkdir(path.join(root, 'usr/bin'), { recursive: true });
      await cp(exe, path.join(root, 'usr/bin/vfio-fleet-agent'));
      const ldd = spawnSync('ldd', [exe], { encoding: 'utf8' });
      expect(ldd.status, ldd.stderr).toBe(0);
      const libs = [...ldd.stdout.matchAll(/(?:=> )?(\/\S+) \(0x/g)].map((m) => m[1] ?? '');
      expect(libs.length).toBeGreaterThan(2);
      for (const lib of libs) {
        await mkdir(path.join(root, path.dirname(lib)), { recursive: true });
        await cp(realpathSync(lib), path.join(root, lib));
      }
      // Listed before the fixture tree goes in (its sysfs links loop, and a recursive readdir
      // follows them).
      const everything = await readdir(root, { recursive: true });
      expect(everything.filter((f) => path.basename(String(f)) === 'node')).toEqual([]);
      await cp(fixtureRoot, path.join(root, 'host'), { recursive: true, verbatimSymlinks: true });

      const inside = spawnSync(
        '/usr/sbin/chroot',
        [root, '/usr/bin/vfio-fleet-agent', 'scan', '--json', '--root', '/host'],
        { env: {}, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 60_000 },
      );
      expect(inside.status, inside.stderr).toBe(0);
      expect(inside.stderr).toBe('');
      const outside = runWithoutNode(exe, ['scan', '--json', '--root', fixtureRoot]);
      expect(withoutTimes(JSON.parse(inside.stdout))).toEqual(
        withoutTimes(JSON.parse(outside.stdout)),
      );
    },
  );

  it('reports a usage error with exit status 2, like the CLI', () => {
    const run = runWithoutNode(distFile('executable').path, ['no-such-command']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('unknown command "no-such-command"');
  });

  it('dials the server over WebSocket from `run`', async () => {
    const upgrades: IncomingMessage[] = [];
    const server = createServer((_req, res) => res.writeHead(404).end());
    server.on('upgrade', (req, socket) => {
      upgrades.push(req);
      socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const agent = spawn(
      distFile('executable').path,
      [
        'run',
        '--server',
        `http://127.0.0.1:${port}`,
        '--token',
        'A'.repeat(32),
        '--interval',
        '1', // bounds the start-up splay: the first dial comes within a second
        '--state-dir',
        path.join(tmp, 'state'),
        '--simulate',
        fixtureRoot,
      ],
      { env: { PATH: '/nonexistent' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    agent.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    try {
      const deadline = Date.now() + 60_000;
      while (upgrades.length === 0 && agent.exitCode === null && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      expect(upgrades.length, stderr).toBeGreaterThan(0);
      expect(upgrades[0]?.url).toBe('/api/agent');
      expect(upgrades[0]?.headers.upgrade).toBe('websocket');
    } finally {
      const exited = new Promise((resolve) => agent.once('exit', resolve));
      if (agent.exitCode === null) agent.kill('SIGTERM');
      await exited;
      await new Promise((resolve) => server.close(resolve));
    }
    expect(stderr).not.toContain('Warning');
  });
});

/** The snapshot's read times differ between two scans; everything else must not. */
function withoutTimes(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutTimes);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([key]) => !/(At|Ms|Time)$/.test(key))
        .map(([key, inner]) => [key, withoutTimes(inner)]),
    );
  }
  return value;
}
