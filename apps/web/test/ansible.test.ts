// The Ansible install path, run for real: the playbook tokens.create hands out (the one the
// enrollment page shows) is run by ansible-playbook against a throwaway root, an overlay of this
// machine's own / (writes land in a temp dir, the machine stays as it was), with the server
// serving the real packaged .deb (packaging/dist, built here when missing). It must download the
// package with its checksum, write the private agent.env with the token, install the package and
// enable the unit; run again, it changes nothing. Needs root (mount, chroot) and ansible-core with
// python3-apt (.ci/run installs them); skipped, saying so, without them, except where
// VFIO_FLEET_REQUIRE_ANSIBLE=1 (CI) makes their absence a failure.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { users } from '@vfio-fleet/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { apiClient } from './helpers/api-client';
import { type Fleet, startFleet } from './helpers/harness';

const REPO = path.resolve(import.meta.dirname, '..', '..', '..');
const DIST = path.join(REPO, 'packaging', 'dist');
const PASSWORD = 'a long enough password';

function has(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
}

const missing = [
  process.getuid?.() === 0 ? null : 'root',
  has('ansible-playbook') ? null : 'ansible-playbook (apt-get install ansible-core)',
  // Debian's python, the one ansible-playbook runs on (a pyenv on the PATH may lack apt).
  spawnSync('/usr/bin/python3', ['-c', 'import apt']).status === 0 ? null : 'python3-apt',
  has('dpkg-deb') ? null : 'dpkg-deb',
].filter((m): m is string => m !== null);
const required = process.env.VFIO_FLEET_REQUIRE_ANSIBLE === '1';
if (missing.length > 0 && !required) {
  console.warn(`ansible.test.ts skipped: needs ${missing.join(', ')}`);
}

describe.runIf(missing.length > 0 && required)('the Ansible install path (required here)', () => {
  it('has what it needs', () => {
    expect(missing, 'VFIO_FLEET_REQUIRE_ANSIBLE=1 but these are missing').toEqual([]);
  });
});

/** Runs a shell script asynchronously: the server answering get_url lives in this process. */
async function sh(script: string, args: string[] = []) {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      '/bin/bash',
      ['-c', script, 'sh', ...args],
      {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    return { status: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { status: e.code ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

describe.skipIf(missing.length > 0)('the Ansible playbook the dashboard hands out', () => {
  let tmp: string;
  let root: string;
  let fleet: Fleet;
  let playbook: string;
  let token: string;

  beforeAll(async () => {
    if (!existsSync(path.join(DIST, 'manifest.json'))) {
      execFileSync(process.execPath, [path.join(REPO, 'packaging', 'build.mjs')], {
        stdio: 'inherit',
      });
    }
    tmp = await mkdtemp(path.join(tmpdir(), 'web-ansible-'));
    root = path.join(tmp, 'root');
    // The throwaway root: / as the lower layer, every write in tmp/upper. proc, sys and dev are
    // the machine's (apt and dpkg need them); the network is too, so get_url reaches the server.
    const mounted = await sh(
      `set -e; mkdir -p "$1/upper" "$1/work" "$2"
       mount -t overlay overlay -o "lowerdir=/,upperdir=$1/upper,workdir=$1/work" "$2"
       for m in proc sys dev; do mount --bind "/$m" "$2/$m"; done`,
      [tmp, root],
    );
    if (mounted.status !== 0) throw new Error(`overlay root: ${mounted.stderr}`);
    fleet = await startFleet('pglite', { downloadsDir: DIST });
    await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
    const admin = apiClient(fleet.url);
    await admin.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
    const created = await admin.api.tokens.create.mutate({
      ttlHours: 1,
      labels: { rack: 'r42' },
    });
    if (created.install.ansible === null) throw new Error('the server has no .deb to hand out');
    playbook = created.install.ansible;
    token = created.token;
    await writeFile(path.join(root, 'tmp', 'vfio-fleet-agent.yml'), playbook);
  }, 180_000);

  afterAll(async () => {
    await fleet?.close();
    if (root !== undefined) {
      await sh('for m in proc sys dev ""; do umount -l "$1/$m" 2>/dev/null; done; true', [root]);
    }
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true });
  });

  /** ansible-playbook inside the throwaway root, against it as localhost. */
  const runPlaybook = () =>
    sh(
      // become: the play asks for it; here ansible already runs as root and no sudo is needed.
      `chroot "$1" env ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \\
         ansible-playbook -i localhost, -c local -e ansible_become=false /tmp/vfio-fleet-agent.yml`,
      [root],
    );

  it('downloads and checks the package, writes agent.env, installs, enables; then changes nothing', async () => {
    const first = await runPlaybook();
    const output = `${first.stdout}\n${first.stderr}`;
    expect(first.status, output).toBe(0);
    expect(output).toMatch(/localhost\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0/);

    // The configuration: private, with the server, the token in its own variable, the labels.
    const envFile = path.join(root, 'etc/vfio-fleet/agent.env');
    expect((await stat(envFile)).mode & 0o777).toBe(0o600);
    const env = await readFile(envFile, 'utf8');
    expect(env).toContain(`VFIO_FLEET_SERVER_URL=${fleet.url}\n`);
    expect(env).toContain(`VFIO_FLEET_TOKEN=${token}\n`);
    expect(env).toContain('VFIO_FLEET_AGENT_ARGS="--label rack=r42"\n');

    // The package is installed in the throwaway root, not on this machine.
    const status = await sh(
      `chroot "$1" dpkg-query -W -f='\${Status} \${Version}' vfio-fleet-agent`,
      [root],
    );
    expect(status.stdout).toMatch(/^install ok installed \d/);
    expect(existsSync(path.join(root, 'usr/bin/vfio-fleet-agent'))).toBe(true);
    expect(spawnSync('dpkg-query', ['-W', 'vfio-fleet-agent']).status).not.toBe(0);
    // Enabled (a chroot has no running systemd to start it in: the play's start is ignored there).
    const enabled = await sh(`systemctl --root="$1" is-enabled vfio-fleet-agent.service`, [root]);
    expect(enabled.stdout.trim()).toBe('enabled');
    // The installed executable runs, Node or not.
    const version = await sh(`chroot "$1" /usr/bin/vfio-fleet-agent --version`, [root]);
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout).toMatch(/^vfio-fleet-agent \d+\.\d+\.\d+/);

    // Idempotent: the second run finds everything in place.
    const second = await runPlaybook();
    expect(second.status, `${second.stdout}\n${second.stderr}`).toBe(0);
    expect(second.stdout).toMatch(/localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0/);
  }, 300_000);
});
