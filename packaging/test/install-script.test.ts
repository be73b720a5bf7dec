// The curl | sh installer against a local server that serves it the way apps/web does: rendered
// template at /install.sh, the executable under /downloads/. Everything lands in a throwaway
// root (VFIO_FLEET_INSTALL_ROOT), which also keeps systemd out of it.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { distDir, distFile, readManifest } from './helpers/dist';
import { buildFixtureRoot, runWithoutNode } from './helpers/host-root';
import { verifyUnit } from './helpers/tools';

const TOKEN = 'dGhpcy1pcy1hLXRlc3QtdG9rZW4tb25seQ';

let tmp: string;
let fixtureRoot: string;
let server: Server;
let serverUrl: string;
/** Flip one byte of the served executable (the checksum in the script stays the real one). */
let tamper = false;

function render(template: string): string {
  const exe = distFile('executable');
  const arm64 = distFile('executable', 'arm64');
  return template
    .replaceAll('__VFIO_FLEET_SERVER_URL__', serverUrl)
    .replaceAll('__VFIO_FLEET_AGENT_VERSION__', readManifest().version)
    .replaceAll('__VFIO_FLEET_AGENT_FILE_ARM64__', arm64.name)
    .replaceAll('__VFIO_FLEET_AGENT_SHA256_ARM64__', arm64.sha256)
    .replaceAll('__VFIO_FLEET_AGENT_FILE__', exe.name)
    .replaceAll('__VFIO_FLEET_AGENT_SHA256__', exe.sha256);
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'packaging-install-'));
  fixtureRoot = await buildFixtureRoot(tmp);
  const template = await readFile(path.join(distDir, 'install.sh.in'), 'utf8');
  const executables = [distFile('executable'), distFile('executable', 'arm64')];
  server = createServer((req, res) => {
    const exe = executables.find((e) => req.url === `/downloads/${e.name}`);
    if (req.url === '/install.sh') {
      res.writeHead(200, { 'content-type': 'text/x-shellscript' }).end(render(template));
    } else if (exe !== undefined) {
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': exe.size,
      });
      let first = true;
      createReadStream(exe.path)
        .on('data', (chunk) => {
          if (tamper && first && typeof chunk !== 'string') chunk[100] = (chunk[100] ?? 0) ^ 0xff;
          first = false;
          res.write(chunk);
        })
        .on('end', () => res.end());
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  serverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
  await rm(tmp, { recursive: true, force: true });
});

/**
 * `curl -fsSL SERVER/install.sh | sh -s -- ARGS`, as the dashboard shows it. Asynchronous: the
 * server answering curl runs in this process, so a spawnSync here would wait on itself.
 */
function install(
  root: string,
  args: readonly string[],
  asUser: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const quoted = args.map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(' ');
  const script = `curl -fsSL "${serverUrl}/install.sh" | ${asUser.join(' ')} sh -s -- ${quoted}`;
  const child = spawn('/bin/sh', ['-c', script], {
    env: { ...process.env, VFIO_FLEET_INSTALL_ROOT: root, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => {
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => []);
  return entries.map(String).sort();
}

describe('install.sh', () => {
  it('installs the executable, a private agent.env and a valid unit, idempotently', async () => {
    const root = path.join(tmp, 'root-ok');
    await mkdir(root);
    const args = ['--token', TOKEN, '--label', 'rack=r12', '--label=role=gpu', '--allow-rebind'];
    const first = await install(root, args);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain('installed vfio-fleet-agent');

    const exe = path.join(root, 'usr/local/bin/vfio-fleet-agent');
    expect((await stat(exe)).mode & 0o777).toBe(0o755);
    const envFile = path.join(root, 'etc/vfio-fleet/agent.env');
    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    const env = await readFile(envFile, 'utf8');
    expect(env).toContain(`VFIO_FLEET_SERVER_URL=${serverUrl}\n`);
    // The token in its own variable, off the agent's command line (ps shows that to everyone).
    expect(env).toContain(`VFIO_FLEET_TOKEN=${TOKEN}\n`);
    expect(env).toContain(
      'VFIO_FLEET_AGENT_ARGS=--label rack=r12 --label role=gpu --allow-rebind\n',
    );
    expect(env).not.toContain(`--token`);
    const unit = await readFile(
      path.join(root, 'etc/systemd/system/vfio-fleet-agent.service'),
      'utf8',
    );
    expect(unit).toMatch(/^ExecStart=\/usr\/local\/bin\/vfio-fleet-agent run /m);
    const verify = await verifyUnit(root, 'vfio-fleet-agent.service');
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);

    const scan = runWithoutNode(exe, ['scan', '--json', '--root', fixtureRoot]);
    expect(scan.status, scan.stderr).toBe(0);

    // Again: nothing downloaded, nothing rewritten, no line twice.
    const before = { exe: await stat(exe), env: await stat(envFile) };
    const second = await install(root, args);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toContain('already installed');
    expect(second.stdout).not.toContain('downloading');
    expect((await stat(exe)).ino).toBe(before.exe.ino);
    expect((await stat(envFile)).mtimeMs).toBe(before.env.mtimeMs);
    expect(await readFile(envFile, 'utf8')).toBe(env);
  });

  it('refuses a tampered download and installs nothing', async () => {
    const root = path.join(tmp, 'root-tampered');
    await mkdir(root);
    tamper = true;
    try {
      const run = await install(root, ['--token', TOKEN]);
      expect(run.status).not.toBe(0);
      expect(run.stderr).toContain('checksum mismatch');
      expect(run.stderr).toContain('nothing was installed');
    } finally {
      tamper = false;
    }
    expect(await listTree(root)).toEqual([]);
  });

  it('installs the arm64 executable on an aarch64 machine, and refuses other machines', async () => {
    // A `uname` that answers what the machine would: the script asks `uname -m` and nothing else.
    const fakeBin = path.join(tmp, 'fake-uname');
    await mkdir(fakeBin, { recursive: true });
    const uname = path.join(fakeBin, 'uname');
    const machine = (m: string) =>
      writeFile(uname, `#!/bin/sh\n[ "$1" = -m ] && echo ${m} || exec /bin/uname "$@"\n`, {
        mode: 0o755,
      });
    const env = { PATH: `${fakeBin}:${process.env.PATH ?? ''}` };
    await machine('aarch64');
    const root = path.join(tmp, 'root-arm64');
    await mkdir(root);
    const run = await install(root, ['--token', TOKEN], [], env);
    expect(run.status, run.stderr).toBe(0);
    const arm64 = distFile('executable', 'arm64');
    expect(run.stdout).toContain(`/downloads/${arm64.name}`);
    const installed = await readFile(path.join(root, 'usr/local/bin/vfio-fleet-agent'));
    expect(createHash('sha256').update(installed).digest('hex')).toBe(arm64.sha256);

    await machine('riscv64');
    const other = path.join(tmp, 'root-riscv');
    await mkdir(other);
    const refused = await install(other, ['--token', TOKEN], [], env);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toContain('x86-64 and arm64; this machine is riscv64');
    expect(await listTree(other)).toEqual([]);
  });

  it('refuses to run without root', async () => {
    const root = path.join(tmp, 'root-user');
    await mkdir(root);
    // A real uid switch: the check is id -u, no test hook.
    const run = await install(
      root,
      ['--token', TOKEN],
      ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
    );
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('must run as root');
    expect(await listTree(root)).toEqual([]);
  });

  it('rejects arguments it cannot write safely into agent.env', async () => {
    const root = path.join(tmp, 'root-args');
    await mkdir(root);
    for (const args of [
      ['--token', 'has space'],
      ['--label', 'novalue'],
      ['--label', 'rack=r 12'],
      ['--label', 'rack=$(reboot)'],
      ['--bogus'],
    ]) {
      const run = await install(root, args);
      expect(run.status, args.join(' ')).not.toBe(0);
    }
    expect(await listTree(root)).toEqual([]);
  });
});
