// The pure parts of handing out the agent: manifest.json parsing (the allow-list of what is
// served), install.sh rendering, and the install commands the enrollment page shows, run through a
// real /bin/sh (and PyYAML for the Ansible snippet, when python3 has it) so quoting is checked by
// the programs that will read it, with hostile label values.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT_ENV,
  agentEnvLines,
  envValue,
  installCommands,
  portableLabels,
} from '../src/downloads/install-commands';
import { INSTALL_SCRIPT_PLACEHOLDERS, renderInstallScript } from '../src/downloads/install-script';
import {
  type AgentManifest,
  agentRelease,
  parseManifest,
  sha256sums,
} from '../src/downloads/manifest';

const SHA_EXE = 'a'.repeat(64);
const SHA_DEB = 'b'.repeat(64);

const MANIFEST: AgentManifest = {
  version: '0.1.0',
  files: [
    {
      name: 'vfio-fleet-agent-0.1.0-linux-x64',
      kind: 'executable',
      os: 'linux',
      arch: 'x64',
      sha256: SHA_EXE,
      size: 10,
    },
    {
      name: 'vfio-fleet-agent_0.1.0_amd64.deb',
      kind: 'deb',
      os: 'linux',
      arch: 'amd64',
      sha256: SHA_DEB,
      size: 20,
    },
  ],
};

/** Label values an admin could type, each of which breaks a naive quoting somewhere. */
const HOSTILE = {
  quote: "it's",
  shell: '$(touch /tmp/pwned) `id` ; rm -rf / & | > <',
  jinja: "{{ lookup('pipe', 'id') }}",
  yaml: '"}: [x] # not a comment\\',
  spaces: '  two  spaces ',
  empty: '',
};

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-downloads-units-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('parseManifest', () => {
  it('accepts the packaging contract and finds the linux/x64 executable and .deb', () => {
    const parsed = parseManifest(JSON.stringify(MANIFEST));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    const release = agentRelease(parsed.manifest);
    expect(release.version).toBe('0.1.0');
    expect(release.executable?.name).toBe('vfio-fleet-agent-0.1.0-linux-x64');
    // Debian calls x64 amd64.
    expect(release.deb?.name).toBe('vfio-fleet-agent_0.1.0_amd64.deb');
    expect(agentRelease(parsed.manifest, 'arm64')).toMatchObject({ executable: null, deb: null });
    expect(sha256sums(parsed.manifest)).toBe(
      `${SHA_EXE}  vfio-fleet-agent-0.1.0-linux-x64\n${SHA_DEB}  vfio-fleet-agent_0.1.0_amd64.deb\n`,
    );
  });

  it('refuses names that are not one plain path segment, bad digests, duplicates and non-JSON', () => {
    const withFile = (patch: Record<string, unknown>) =>
      JSON.stringify({ ...MANIFEST, files: [{ ...MANIFEST.files[0], ...patch }] });
    for (const name of [
      '../package.json',
      '..',
      '.hidden',
      'a/b',
      'a%2fb',
      '',
      'x'.repeat(300),
      'SHA256SUMS',
      'manifest.json',
    ]) {
      const parsed = parseManifest(withFile({ name }));
      expect(parsed.ok, name).toBe(false);
    }
    expect(parseManifest(withFile({ sha256: 'A'.repeat(64) })).ok).toBe(false);
    expect(parseManifest(withFile({ sha256: 'a'.repeat(63) })).ok).toBe(false);
    expect(parseManifest(withFile({ size: -1 })).ok).toBe(false);
    expect(parseManifest(withFile({ kind: 'Exe cutable' })).ok).toBe(false);
    const dup = JSON.stringify({ ...MANIFEST, files: [MANIFEST.files[0], MANIFEST.files[0]] });
    const duplicate = parseManifest(dup);
    expect(duplicate.ok).toBe(false);
    if (!duplicate.ok) expect(duplicate.error).toContain('listed twice');
    const notJson = parseManifest('{"version":');
    expect(notJson.ok).toBe(false);
    if (!notJson.ok) expect(notJson.error).toContain('not JSON');
    expect(parseManifest(JSON.stringify({ version: '0.1.0; rm -rf /', files: [] })).ok).toBe(false);
  });
});

describe('renderInstallScript', () => {
  const template = [
    '#!/bin/sh',
    `SERVER="${INSTALL_SCRIPT_PLACEHOLDERS.serverUrl}"`,
    `VERSION='${INSTALL_SCRIPT_PLACEHOLDERS.version}'`,
    `FILE=${INSTALL_SCRIPT_PLACEHOLDERS.file}`,
    `SHA=${INSTALL_SCRIPT_PLACEHOLDERS.sha256}`,
    `URL="$SERVER/downloads/${INSTALL_SCRIPT_PLACEHOLDERS.file}"`,
    '',
  ].join('\n');
  const release = agentRelease(MANIFEST);
  const executable = release.executable;
  if (executable === null) throw new Error('fixture has no executable');

  it('fills every placeholder, without a trailing slash on the URL', () => {
    const rendered = renderInstallScript(template, 'http://[::1]:3000/', {
      version: '0.1.0',
      executable,
    });
    expect(rendered.ok).toBe(true);
    if (!rendered.ok) return;
    expect(rendered.script).not.toMatch(/__VFIO_FLEET_/);
    expect(rendered.script).toContain('SERVER="http://[::1]:3000"\n');
    expect(rendered.script).toContain(`SHA=${SHA_EXE}\n`);
    expect(rendered.script).toContain('URL="$SERVER/downloads/vfio-fleet-agent-0.1.0-linux-x64"');
  });

  // The packaging's own template, when this checkout has it: every placeholder is one this server
  // fills, and the result is a script sh can parse.
  const packagingTemplate = path.resolve(
    import.meta.dirname,
    '../../../packaging/install/install.sh.in',
  );
  it.runIf(existsSync(packagingTemplate))("renders the packaging's install.sh.in", async () => {
    const rendered = renderInstallScript(
      await readFile(packagingTemplate, 'utf8'),
      'http://[::1]:3000',
      {
        version: '0.1.0',
        executable,
      },
    );
    expect(rendered.ok, rendered.ok ? '' : rendered.error).toBe(true);
    if (!rendered.ok) return;
    expect(rendered.script).toContain(SHA_EXE);
    const file = path.join(tmp, 'install.sh');
    await writeFile(file, rendered.script);
    const check = spawnSync('/bin/sh', ['-n', file], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
  });

  it('names the arm64 executable when the release has one, and leaves it empty otherwise', () => {
    const withArm = [
      `ARM='${INSTALL_SCRIPT_PLACEHOLDERS.fileArm64}'`,
      `ARM_SHA='${INSTALL_SCRIPT_PLACEHOLDERS.sha256Arm64}'`,
      '',
    ].join('\n');
    const arm64 = {
      ...executable,
      name: 'vfio-fleet-agent-0.1.0-linux-arm64',
      arch: 'arm64',
      sha256: 'b'.repeat(64),
    };
    const offered = renderInstallScript(withArm, 'http://h', {
      version: '0.1.0',
      executable,
      executableArm64: arm64,
    });
    expect(offered).toEqual({
      ok: true,
      script: `ARM='vfio-fleet-agent-0.1.0-linux-arm64'\nARM_SHA='${'b'.repeat(64)}'\n`,
    });
    const none = renderInstallScript(withArm, 'http://h', { version: '0.1.0', executable });
    expect(none).toEqual({ ok: true, script: "ARM=''\nARM_SHA=''\n" });
    // Only those two may be empty.
    const emptyVersion = renderInstallScript(template, 'http://h', { version: '', executable });
    expect(emptyVersion).toMatchObject({ ok: false });
  });

  it('refuses a placeholder it does not know and a value a shell would interpret', () => {
    const unknown = renderInstallScript(`${template}X=__VFIO_FLEET_OTHER__\n`, 'http://h', {
      version: '0.1.0',
      executable,
    });
    expect(unknown).toMatchObject({ ok: false });
    const hostile = renderInstallScript(template, 'http://h/$(id)', {
      version: '0.1.0',
      executable,
    });
    expect(hostile).toMatchObject({ ok: false });
  });
});

/** The words /bin/sh makes of `printf '%s\0' <words>`. */
function shellWords(words: string): string[] {
  const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${words}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

/** Sources an env file in /bin/sh and prints the agent's variables. */
async function sourceEnv(content: string): Promise<Record<string, string | null>> {
  const file = path.join(tmp, `agent-${Math.random().toString(36).slice(2)}.env`);
  await writeFile(file, content);
  const names = [AGENT_ENV.server, AGENT_ENV.token, AGENT_ENV.args];
  const script = `. "$1"; ${names.map((n) => `if [ -n "\${${n}+x}" ]; then printf '%s\\0' "$${n}"; else printf '%s\\0' '<unset>'; fi`).join('; ')}`;
  const out = execFileSync('/bin/sh', ['-c', script, 'sh', file], { encoding: 'utf8' });
  const values = out.split('\0').slice(0, -1);
  return Object.fromEntries(
    names.map((n, i) => [n, values[i] === '<unset>' ? null : (values[i] ?? null)]),
  );
}

/** Labels whose values can travel in the env file (systemd splits it at whitespace). */
const PORTABLE = {
  rack: 'r01',
  'example.com/tier': 'gold',
  url: 'http://x:1/a,b=c~d@e+f',
  empty: '',
};
const OMITTED = Object.keys(HOSTILE).filter((k) => k !== 'empty');

describe('installCommands', () => {
  const server = 'http://10.0.0.1:3000';
  const token = 'tok_EN-123';
  const labelWords = (labels: Record<string, string>) =>
    Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]);

  it('carries only labels the env file can hold, and names the others', () => {
    const commands = installCommands({
      server,
      token,
      labels: { ...PORTABLE, ...HOSTILE },
      release: agentRelease(MANIFEST),
    });
    expect(commands.omittedLabels).toEqual(OMITTED);
    for (const key of OMITTED) {
      for (const text of [commands.script, commands.deb ?? '', commands.ansible ?? '']) {
        expect(text).not.toContain(`${key}=`);
      }
    }
    expect(portableLabels({ ...PORTABLE, ...HOSTILE }).labels).toEqual({ ...PORTABLE, empty: '' });
  });

  it('curl | sh: the script URL, the token and the labels as words a shell splits back exactly', () => {
    const commands = installCommands({
      server,
      token,
      labels: { ...PORTABLE, ...HOSTILE },
      release: agentRelease(MANIFEST),
    });
    expect(commands.packaged).toBe(true);
    expect(commands.version).toBe('0.1.0');
    expect(commands.script.startsWith(`curl -fsSL ${server}/install.sh | sudo sh -s -- `)).toBe(
      true,
    );
    const args = commands.script.slice(commands.script.indexOf(' -- ') + 4);
    expect(shellWords(args)).toEqual(['--token', token, ...labelWords(PORTABLE)]);
    // --allow-rebind only when asked for.
    expect(commands.script).not.toContain('--allow-rebind');
    const rebind = installCommands({ server, token, labels: {}, allowRebind: true, release: null });
    expect(rebind.script.endsWith(`--token ${token} --allow-rebind`)).toBe(true);
  });

  it('env file: the server URL, the token and the agent arguments, read back by sh and split as systemd does', async () => {
    const lines = agentEnvLines({ server: `${server}/`, token, labels: PORTABLE });
    expect(lines[0]).toBe(`VFIO_FLEET_SERVER_URL=${server}`);
    // The token in its own variable (the agent's environment), never among the arguments that
    // become its command line, which every local user can read in ps.
    expect(lines[1]).toBe('VFIO_FLEET_TOKEN=tok_EN-123');
    expect(lines[2]).toMatch(/^VFIO_FLEET_AGENT_ARGS="--label rack=r01 /);
    const values = await sourceEnv(`${lines.join('\n')}\n`);
    expect(values[AGENT_ENV.server]).toBe(server);
    expect(values[AGENT_ENV.token]).toBe(token);
    // systemd: `$VFIO_FLEET_AGENT_ARGS` (unbraced) is split at whitespace into words.
    expect(values[AGENT_ENV.args]?.split(/\s+/)).toEqual(labelWords(PORTABLE));
    const rebind = await sourceEnv(
      `${agentEnvLines({ server, token, labels: {}, allowRebind: true }).join('\n')}\n`,
    );
    expect(rebind[AGENT_ENV.args]).toBe('--allow-rebind');
    const bare = await sourceEnv(`${agentEnvLines({ server, token, labels: {} }).join('\n')}\n`);
    expect(bare[AGENT_ENV.args]).toBe('');
  });

  it('env file: plain values stay readable (bare or double-quoted), others single-quoted', async () => {
    expect(envValue('r1')).toBe('r1');
    expect(envValue('rack=r1 role=gpu')).toBe('"rack=r1 role=gpu"');
    expect(envValue("note=gold's tier")).toBe(`"note=gold's tier"`);
    expect(envValue('a $HOME')).toBe("'a $HOME'");
    expect(envValue('say "hi"')).toBe(`'say "hi"'`);
    expect(envValue('back\\slash x')).toBe("'back\\slash x'");
    expect(envValue('')).toBe("''");
    for (const value of ['rack=r1 role=gpu', "note=gold's tier", 'a $HOME', 'say "hi"', 'x\\ y']) {
      const values = await sourceEnv(`${AGENT_ENV.args}=${envValue(value)}\n`);
      expect(values[AGENT_ENV.args]).toBe(value);
    }
  });

  it('.deb: download, checksum, env file, apt, systemd — chained so a failure stops it', async () => {
    const commands = installCommands({
      server,
      token,
      labels: { ...PORTABLE, ...HOSTILE },
      release: agentRelease(MANIFEST),
    });
    const deb = commands.deb ?? '';
    const lines = deb.split(' && \\\n  ');
    expect(lines).toEqual([
      `curl -fsSLO ${server}/downloads/vfio-fleet-agent_0.1.0_amd64.deb`,
      `echo '${SHA_DEB}  vfio-fleet-agent_0.1.0_amd64.deb' | sha256sum -c -`,
      'sudo install -d -m 0755 /etc/vfio-fleet',
      expect.stringMatching(
        /^printf '%s\\n' .* \| sudo sh -c 'umask 077 && cat > \/etc\/vfio-fleet\/agent.env'$/,
      ),
      'sudo apt-get install -y -o Dpkg::Options::=--force-confold ./vfio-fleet-agent_0.1.0_amd64.deb',
      'sudo systemctl enable vfio-fleet-agent',
      'sudo systemctl restart vfio-fleet-agent',
    ]);
    // The env file the printf line writes.
    const printf = lines[3] ?? '';
    const written = execFileSync('/bin/sh', ['-c', printf.slice(0, printf.indexOf(' | sudo '))], {
      encoding: 'utf8',
    });
    expect(written).toBe(`${agentEnvLines({ server, token, labels: PORTABLE }).join('\n')}\n`);
  });

  it('Ansible: a playbook whose values YAML reads back exactly, with the env file marked !unsafe', async () => {
    const commands = installCommands({
      server,
      token,
      labels: { ...PORTABLE, ...HOSTILE },
      release: agentRelease(MANIFEST),
    });
    const playbook = commands.ansible ?? '';
    expect(playbook).toContain(`checksum: "sha256:${SHA_DEB}"`);
    expect(playbook).toContain('content: !unsafe "');
    const hasYaml = spawnSync('python3', ['-c', 'import yaml']).status === 0;
    if (!hasYaml) return; // The string checks above still ran.
    const file = path.join(tmp, 'playbook.yml');
    await writeFile(file, playbook);
    const json = execFileSync(
      'python3',
      [
        '-c',
        [
          'import json, sys, yaml',
          'yaml.SafeLoader.add_constructor("!unsafe", lambda l, n: {"unsafe": l.construct_scalar(n)})',
          'print(json.dumps(yaml.safe_load(open(sys.argv[1]))))',
        ].join('\n'),
        file,
      ],
      { encoding: 'utf8' },
    );
    const [play] = JSON.parse(json) as {
      become: boolean;
      tasks: Record<string, Record<string, unknown>>[];
    }[];
    expect(play?.become).toBe(true);
    const task = (module: string) => play?.tasks.find((t) => module in t)?.[module];
    expect(task('ansible.builtin.get_url')).toEqual({
      url: `${server}/downloads/vfio-fleet-agent_0.1.0_amd64.deb`,
      dest: '/tmp/vfio-fleet-agent_0.1.0_amd64.deb',
      checksum: `sha256:${SHA_DEB}`,
      mode: '0644',
    });
    // copy does not create the directory, which on a new host does not exist before the package.
    expect(task('ansible.builtin.file')).toEqual({
      path: '/etc/vfio-fleet',
      state: 'directory',
      owner: 'root',
      group: 'root',
      mode: '0755',
    });
    const order = play?.tasks.map((t) => Object.keys(t).find((k) => k.startsWith('ansible.')));
    expect(order).toEqual([
      'ansible.builtin.get_url',
      'ansible.builtin.file',
      'ansible.builtin.copy',
      'ansible.builtin.apt',
      'ansible.builtin.systemd_service',
    ]);
    expect(task('ansible.builtin.copy')).toMatchObject({
      dest: '/etc/vfio-fleet/agent.env',
      mode: '0600',
      content: { unsafe: `${agentEnvLines({ server, token, labels: PORTABLE }).join('\n')}\n` },
    });
    expect(task('ansible.builtin.apt')).toEqual({ deb: '/tmp/vfio-fleet-agent_0.1.0_amd64.deb' });
    expect(task('ansible.builtin.systemd_service')).toEqual({
      name: 'vfio-fleet-agent',
      enabled: true,
      state: 'started',
    });
  });

  it('without a packaged agent: the script command only, and says so', () => {
    const commands = installCommands({ server, token, labels: {}, release: null });
    expect(commands).toMatchObject({
      packaged: false,
      version: null,
      deb: null,
      ansible: null,
      omittedLabels: [],
    });
    expect(commands.script).toBe(
      `curl -fsSL ${server}/install.sh | sudo sh -s -- --token ${token}`,
    );
  });

  it('quotes an IPv6 server URL', () => {
    const commands = installCommands({
      server: 'http://[::1]:3000',
      token,
      labels: {},
      release: agentRelease(MANIFEST),
    });
    expect(commands.script).toContain("curl -fsSL 'http://[::1]:3000/install.sh' |");
    expect(commands.deb).toContain("curl -fsSLO 'http://[::1]:3000/downloads/");
    expect(commands.deb).toContain('VFIO_FLEET_SERVER_URL="http://[::1]:3000"');
  });
});
