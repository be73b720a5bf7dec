// The server hands out the agent: a fake packaging/dist (the packaging's contract) behind the real
// server on port 0. Files come back byte for byte with their digest; HEAD and If-None-Match work;
// nothing outside the manifest is reachable however the name is spelled; /install.sh is rendered for
// this server and, run by a real shell with curl, fetches and verifies the executable; the .deb
// command tokens.create prints, run by a real shell (sudo, apt-get and systemctl stubbed, /etc
// redirected), installs with the env file the agent needs and stops at a tampered download; a
// rebuilt manifest is picked up; a missing or broken one is a 503 that says how to build it.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { users } from '@vfio-fleet/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { AGENT_ENV } from '../src/downloads/install-commands';
import { type ApiClient, apiClient } from './helpers/api-client';
import {
  FAKE_DEB,
  FAKE_EXECUTABLE,
  type FakeDist,
  sha256,
  writeFakeDist,
} from './helpers/fake-dist';
import { type Fleet, startFleet } from './helpers/harness';
import { rawRequest } from './helpers/raw-http';

const PASSWORD = 'a long enough password';

/**
 * A shell command that talks to the server: asynchronously, as the server runs in this process
 * (a synchronous child would block the event loop that has to answer it).
 */
async function sh(
  script: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)('/bin/sh', ['-c', script, 'sh', ...args], {
      ...options,
      encoding: 'utf8',
    });
    return { status: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { status: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

let tmp: string;
let dist: FakeDist;
let fleet: Fleet;
let admin: ApiClient;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-downloads-'));
  dist = await writeFakeDist(path.join(tmp, 'dist'));
  fleet = await startFleet('pglite', { downloadsDir: dist.dir });
  await fleet.db
    .insert(users)
    .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
  admin = apiClient(fleet.url);
  await admin.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
}, 60_000);

afterAll(async () => {
  await fleet?.close();
  await rm(tmp, { recursive: true, force: true });
});

/** A request with the path sent exactly as given (fetch would normalize `..`). */
function raw(method: string, pathname: string, headers: Record<string, string> = {}) {
  return rawRequest(fleet.url, method, pathname, headers);
}

describe('downloads', () => {
  it('serves each listed file byte for byte, with its length, type, digest and ETag', async () => {
    for (const [name, type] of [
      [FAKE_EXECUTABLE, 'application/octet-stream'],
      [FAKE_DEB, 'application/vnd.debian.binary-package'],
    ] as const) {
      const res = await fetch(`${fleet.url}/downloads/${name}`);
      expect(res.status).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      expect(body.equals(dist.files[name] ?? Buffer.alloc(0))).toBe(true);
      expect(res.headers.get('content-type')).toBe(type);
      expect(res.headers.get('content-length')).toBe(String(body.length));
      expect(res.headers.get('x-checksum-sha256')).toBe(sha256(body));
      expect(res.headers.get('etag')).toBe(`"sha256-${sha256(body)}"`);
      expect(res.headers.get('cache-control')).toContain('max-age');

      const head = await fetch(`${fleet.url}/downloads/${name}`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('content-length')).toBe(String(body.length));
      expect(head.headers.get('x-checksum-sha256')).toBe(sha256(body));
      expect((await head.arrayBuffer()).byteLength).toBe(0);

      const again = await fetch(`${fleet.url}/downloads/${name}`, {
        headers: { 'if-none-match': res.headers.get('etag') ?? '' },
      });
      expect(again.status).toBe(304);
    }
  });

  it('serves manifest.json and a SHA256SUMS that sha256sum -c accepts for the downloads', async () => {
    const manifest = await fetch(`${fleet.url}/downloads/manifest.json`);
    expect(manifest.status).toBe(200);
    expect(await manifest.json()).toEqual(dist.manifest);
    const sums = await fetch(`${fleet.url}/downloads/SHA256SUMS`);
    expect(sums.status).toBe(200);
    const dir = path.join(tmp, 'checked');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'SHA256SUMS'), await sums.text());
    for (const name of [FAKE_EXECUTABLE, FAKE_DEB]) {
      const res = await fetch(`${fleet.url}/downloads/${name}`);
      await writeFile(path.join(dir, name), Buffer.from(await res.arrayBuffer()));
    }
    const check = spawnSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: dir, encoding: 'utf8' });
    expect(check.status, check.stdout + check.stderr).toBe(0);
  });

  it('answers 404 for anything the manifest does not list, however the name is spelled', async () => {
    for (const p of [
      '/downloads/nope',
      '/downloads/',
      '/downloads/install.sh.in',
      '/downloads/..%2fpackage.json',
      '/downloads/..%2F..%2Fpackage.json',
      '/downloads/%2e%2e%2fmanifest.json',
      `/downloads/${FAKE_EXECUTABLE}/`,
      `/downloads/${FAKE_EXECUTABLE}%00`,
      `/downloads/./${FAKE_EXECUTABLE}x`,
      `/downloads/${encodeURIComponent(`../dist/${FAKE_EXECUTABLE}`)}`,
    ]) {
      const res = await raw('GET', p);
      expect(res.status, p).toBe(404);
      expect(res.body.includes(dist.files[FAKE_EXECUTABLE] ?? Buffer.alloc(1))).toBe(false);
    }
    // Dot segments are resolved before routing: this is /package.json, which is not a download.
    const dotted = await raw('GET', '/downloads/../package.json');
    expect(dotted.status).toBe(404);
    expect(dotted.body.toString()).not.toContain('@vfio-fleet');
    const post = await raw('POST', `/downloads/${FAKE_EXECUTABLE}`);
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('renders /install.sh for this server; run by sh with curl, it fetches and verifies the agent', async () => {
    const res = await fetch(`${fleet.url}/install.sh`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/x-shellscript');
    const script = await res.text();
    expect(script).not.toMatch(/__VFIO_FLEET_[A-Z_]+__/);
    const exe = dist.manifest.files.find((f) => f.kind === 'executable');
    expect(script).toContain(`SERVER="${fleet.url}"`);
    expect(script).toContain(`SHA256="${exe?.sha256}"`);
    expect(script).toContain(`FILE="${FAKE_EXECUTABLE}"`);

    const dest = path.join(tmp, 'script-dest');
    await mkdir(dest, { recursive: true });
    const out = await sh(`curl -fsSL ${fleet.url}/install.sh | DESTDIR="$1" sh -s -- --token tok`, [
      dest,
    ]);
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain(`installed 0.1.0 from ${fleet.url} with --token tok`);
    const installed = await readFile(path.join(dest, FAKE_EXECUTABLE));
    expect(installed.equals(dist.files[FAKE_EXECUTABLE] ?? Buffer.alloc(0))).toBe(true);

    // The Host header ends up in a script run as root: anything but host[:port] is refused.
    const hostile = await raw('GET', '/install.sh', { host: 'evil$(id)' });
    expect(hostile.status).toBe(400);
  });

  it('tokens.create prints three install commands; the .deb one installs, and stops at a tampered file', async () => {
    const labels = { rack: 'r07', role: 'gpu', note: "it's $(id)" };
    const created = await admin.api.tokens.create.mutate({ ttlHours: 1, labels });
    const { install } = created;
    expect(install.packaged).toBe(true);
    expect(install.version).toBe('0.1.0');
    // A value the env file cannot hold is left out of all three, and named.
    expect(install.omittedLabels).toEqual(['note']);
    expect(install.script).toContain(`${fleet.url}/install.sh`);
    expect(install.script).toContain(created.token);
    const deb = dist.manifest.files.find((f) => f.kind === 'deb');
    expect(install.ansible).toContain(`sha256:${deb?.sha256}`);
    expect(install.ansible).toContain(created.token);
    expect(install.deb).toContain(`${deb?.sha256}  ${FAKE_DEB}`);

    // sudo runs its command, apt-get and systemctl only log; /etc/vfio-fleet is a temp dir.
    const bin = path.join(tmp, 'bin');
    const etc = path.join(tmp, 'etc-vfio-fleet');
    const log = path.join(tmp, 'stub.log');
    await mkdir(bin, { recursive: true });
    await writeFile(path.join(bin, 'sudo'), '#!/bin/sh\nexec "$@"\n');
    for (const stub of ['apt-get', 'systemctl']) {
      await writeFile(
        path.join(bin, stub),
        `#!/bin/sh\necho "${stub} $*" >> ${JSON.stringify(log)}\n`,
      );
    }
    for (const stub of ['sudo', 'apt-get', 'systemctl']) await chmod(path.join(bin, stub), 0o755);
    const run = async (cwd: string) => {
      await mkdir(cwd, { recursive: true });
      await writeFile(log, '');
      const command = (install.deb ?? '').replaceAll('/etc/vfio-fleet', etc);
      const result = await sh(command, [], {
        cwd,
        env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` },
      });
      return { ...result, log: await readFile(log, 'utf8') };
    };

    const ok = await run(path.join(tmp, 'deb-ok'));
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.log).toBe(
      [
        `apt-get install -y -o Dpkg::Options::=--force-confold ./${FAKE_DEB}`,
        'systemctl enable vfio-fleet-agent',
        'systemctl restart vfio-fleet-agent',
        '',
      ].join('\n'),
    );
    const envFile = path.join(etc, 'agent.env');
    expect(((await stat(envFile)).mode & 0o777).toString(8)).toBe('600');
    const sourced = execFileSync(
      '/bin/sh',
      [
        '-c',
        `. "$1"; printf '%s\\0' "$${AGENT_ENV.server}" "$${AGENT_ENV.token}" "$${AGENT_ENV.args}"`,
        'sh',
        envFile,
      ],
      { encoding: 'utf8' },
    );
    expect(sourced.split('\0').slice(0, 3)).toEqual([
      fleet.url,
      created.token,
      '--label rack=r07 --label role=gpu',
    ]);

    // Same size, other bytes: the server still serves it (its size matches), the digest does not.
    const original = dist.files[FAKE_DEB] ?? Buffer.alloc(0);
    const tampered = Buffer.from(original);
    tampered[0] = (tampered[0] ?? 0) ^ 0xff;
    await writeFile(path.join(dist.dir, FAKE_DEB), tampered);
    try {
      await rm(envFile);
      const bad = await run(path.join(tmp, 'deb-tampered'));
      expect(bad.status).not.toBe(0);
      expect(bad.stdout + bad.stderr).toMatch(/FAILED/);
      expect(bad.log).toBe('');
      expect(existsSync(envFile)).toBe(false);
    } finally {
      await writeFile(path.join(dist.dir, FAKE_DEB), original);
    }
  });

  it('re-reads manifest.json when it changes, and says how to package the agent when there is none', async () => {
    const manifestFile = path.join(dist.dir, 'manifest.json');
    await writeFile(manifestFile, JSON.stringify({ ...dist.manifest, version: '0.2.0' }));
    // A rebuild within the same mtime tick still changes the size; move the mtime on to be sure.
    const later = new Date(Date.now() + 5_000);
    await utimes(manifestFile, later, later);
    const manifest = (await (await fetch(`${fleet.url}/downloads/manifest.json`)).json()) as {
      version: string;
    };
    expect(manifest.version).toBe('0.2.0');

    await writeFile(manifestFile, '{"version": "0.3.0", "files": [{"name": "../x"}]}');
    const invalid = await fetch(`${fleet.url}/install.sh`);
    expect(invalid.status).toBe(503);
    expect(await invalid.text()).toContain('manifest.json is invalid');

    const moved = `${dist.dir}.moved`;
    await rename(dist.dir, moved);
    try {
      for (const p of [
        '/install.sh',
        `/downloads/${FAKE_EXECUTABLE}`,
        '/downloads/manifest.json',
      ]) {
        const res = await fetch(`${fleet.url}${p}`);
        expect(res.status, p).toBe(503);
        expect(res.headers.get('content-type')).toContain('text/plain');
        const text = await res.text();
        expect(text).toContain('has not been packaged');
        expect(text).toContain('npm run build -w packaging');
      }
      const created = await admin.api.tokens.create.mutate({ ttlHours: 1 });
      expect(created.install).toMatchObject({ packaged: false, deb: null, ansible: null });
      expect(created.install.script).toContain(created.token);
    } finally {
      await rename(moved, dist.dir);
      await writeFile(manifestFile, JSON.stringify(dist.manifest));
    }
    const back = await fetch(`${fleet.url}/downloads/${FAKE_EXECUTABLE}`);
    expect(back.status).toBe(200);
    await back.arrayBuffer();
  });
});
