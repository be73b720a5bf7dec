// The Debian package: what dpkg-deb says it holds, an install into a throwaway root with dpkg
// itself (maintainer scripts included), the unit checked by systemd, lintian clean.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentVersion, distFile } from './helpers/dist';
import { buildFixtureRoot, runWithoutNode } from './helpers/host-root';
import { tool, verifyUnit } from './helpers/tools';

let tmp: string;
let fixtureRoot: string;
let deb: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'packaging-deb-'));
  fixtureRoot = await buildFixtureRoot(tmp);
  deb = distFile('deb').path;
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** dpkg into another root: chrootless scripts see DPKG_ROOT; libc6 & co. are not in that root. */
function dpkg(root: string, args: readonly string[]) {
  const run = tool('dpkg', [
    `--root=${root}`,
    '--force-not-root',
    '--force-script-chrootless',
    '--force-depends',
    '--log=/dev/null',
    ...args,
  ]);
  expect(run.status, `dpkg ${args.join(' ')}\n${run.stdout}\n${run.stderr}`).toBe(0);
  return run;
}

describe('the Debian package', () => {
  it('declares the agent version, the architecture, its libraries and the conffile', () => {
    const field = (name: string) => tool('dpkg-deb', ['--field', deb, name]).stdout.trim();
    expect(field('Package')).toBe('vfio-fleet-agent');
    expect(field('Version')).toBe(agentVersion());
    expect(field('Architecture')).toBe('amd64');
    expect(field('Depends')).toMatch(/^libc6 \(>= 2\.\d+\), libgcc-s1 .*, libstdc\+\+6/);
    const info = tool('dpkg-deb', ['--info', deb]);
    expect(info.status).toBe(0);
    for (const member of ['control', 'conffiles', 'md5sums', 'postinst', 'prerm', 'postrm']) {
      expect(info.stdout).toContain(` ${member}`);
    }
    expect(tool('dpkg-deb', ['--ctrl-tarfile', deb]).status).toBe(0);
  });

  it('holds root-owned files with the right modes', () => {
    const contents = tool('dpkg-deb', ['--contents', deb]);
    expect(contents.status).toBe(0);
    const entries = new Map(
      contents.stdout
        .trim()
        .split('\n')
        .map((line) => {
          const [mode = '', owner = ''] = line.split(/\s+/);
          return [line.slice(line.indexOf('./') + 1).replace(/\/$/, ''), `${mode} ${owner}`];
        }),
    );
    expect(entries.get('/usr/bin/vfio-fleet-agent')).toBe('-rwxr-xr-x root/root');
    expect(entries.get('/lib/systemd/system/vfio-fleet-agent.service')).toBe(
      '-rw-r--r-- root/root',
    );
    expect(entries.get('/etc/vfio-fleet/agent.env')).toBe('-rw------- root/root');
    expect(entries.get('/usr/share/doc/vfio-fleet-agent/copyright')).toBe('-rw-r--r-- root/root');
    expect(entries.get('/usr/share/doc/vfio-fleet-agent/changelog.gz')).toBe(
      '-rw-r--r-- root/root',
    );
    for (const [file, modeOwner] of entries) {
      expect(modeOwner, file).toMatch(/ root\/root$/);
    }
  });

  it('installs into a throwaway root, runs there without Node, and purges cleanly', async () => {
    const root = path.join(tmp, 'root');
    await mkdir(path.join(root, 'var/lib/dpkg/updates'), { recursive: true });
    await mkdir(path.join(root, 'var/lib/dpkg/info'), { recursive: true });
    await writeFile(path.join(root, 'var/lib/dpkg/status'), '');

    const install = dpkg(root, ['--install', deb]);
    // Unconfigured, and not on a running systemd in that root: postinst starts nothing.
    expect(install.stdout).toContain('Setting up vfio-fleet-agent');
    expect(
      tool('dpkg-query', [
        `--admindir=${root}/var/lib/dpkg`,
        '-W',
        // dpkg-query's own ${Status} field syntax, not a template literal.
        `-f=$${'{'}Status}`,
        'vfio-fleet-agent',
      ]).stdout,
    ).toBe('install ok installed');
    const env = await stat(path.join(root, 'etc/vfio-fleet/agent.env'));
    expect(env.mode & 0o777).toBe(0o600);
    expect(await readFile(path.join(root, 'etc/vfio-fleet/agent.env'), 'utf8')).toMatch(
      /^#VFIO_FLEET_SERVER_URL=/m,
    );

    const exe = path.join(root, 'usr/bin/vfio-fleet-agent');
    const scan = runWithoutNode(exe, ['scan', '--json', '--root', fixtureRoot]);
    expect(scan.status, scan.stderr).toBe(0);
    expect(JSON.parse(scan.stdout)).toHaveProperty('devices');

    const verify = await verifyUnit(root, 'vfio-fleet-agent.service');
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);

    // Reinstalling the same version (what an upgrade does) keeps an edited conffile.
    const configured = 'VFIO_FLEET_SERVER_URL=https://fleet.example:3000\n';
    await writeFile(path.join(root, 'etc/vfio-fleet/agent.env'), configured, { mode: 0o600 });
    dpkg(root, ['--force-confold', '--install', deb]);
    expect(await readFile(path.join(root, 'etc/vfio-fleet/agent.env'), 'utf8')).toBe(configured);

    // State the agent wrote: remove keeps it (and the config), purge removes both.
    await mkdir(path.join(root, 'var/lib/vfio-fleet'), { recursive: true });
    await writeFile(path.join(root, 'var/lib/vfio-fleet/credential.json'), '{}');
    dpkg(root, ['--remove', 'vfio-fleet-agent']);
    expect(existsSync(exe)).toBe(false);
    expect(existsSync(path.join(root, 'etc/vfio-fleet/agent.env'))).toBe(true);
    expect(existsSync(path.join(root, 'var/lib/vfio-fleet/credential.json'))).toBe(true);
    dpkg(root, ['--purge', 'vfio-fleet-agent']);
    expect(existsSync(path.join(root, 'etc/vfio-fleet'))).toBe(false);
    expect(existsSync(path.join(root, 'var/lib/vfio-fleet'))).toBe(false);
  });

  it('keeps an agent.env written before the package (preseeding, as the Ansible snippet does)', async () => {
    const root = path.join(tmp, 'root-preseeded');
    await mkdir(path.join(root, 'var/lib/dpkg/updates'), { recursive: true });
    await mkdir(path.join(root, 'var/lib/dpkg/info'), { recursive: true });
    await writeFile(path.join(root, 'var/lib/dpkg/status'), '');
    await mkdir(path.join(root, 'etc/vfio-fleet'), { recursive: true });
    const preseeded = 'VFIO_FLEET_SERVER_URL=https://fleet.example:3000\n';
    await writeFile(path.join(root, 'etc/vfio-fleet/agent.env'), preseeded, { mode: 0o644 });
    dpkg(root, ['--force-confold', '--force-confdef', '--install', deb]);
    expect(await readFile(path.join(root, 'etc/vfio-fleet/agent.env'), 'utf8')).toBe(preseeded);
    // postinst tightens what an admin left readable: the file holds the token.
    expect((await stat(path.join(root, 'etc/vfio-fleet/agent.env'))).mode & 0o777).toBe(0o600);
  });

  it('is lintian clean (overrides only with a reason, in debian/lintian-overrides)', () => {
    // --pedantic: every tag level; lintian prints a tag only when it is not overridden. The
    // spelling check (overridden: Node's own strings) is skipped: on 88 MB it is a third of the run.
    const lint = tool('lintian', [
      '--info',
      '--pedantic',
      '--fail-on',
      'error,warning,info,pedantic',
      '--dont-check-part',
      'binaries/spelling',
      deb,
    ]);
    const tags = lint.stdout.split('\n').filter((line) => /^[EWIPX]: /.test(line));
    expect(tags).toEqual([]);
    expect(lint.status, lint.stderr).toBe(0);
  });
});
