/**
 * The copy-paste install commands the enrollment page shows for a new token, one per install path:
 *
 * - `script`: `curl … /install.sh | sudo sh -s -- --token … --label …` (the script checks the
 *   executable's SHA-256 itself).
 * - `deb`: download the .deb from this server, check its SHA-256, write the agent's env file, install
 *   it with apt, (re)start the unit. Chained with `&&`: a failed checksum stops everything after it,
 *   even when pasted into an interactive shell (where `set -e` would close the shell).
 * - `ansible`: the same as a playbook (get_url with `checksum:`, copy of the env file, apt deb:,
 *   systemd).
 *
 * All three carry the same labels: those whose values can live in the env file, where systemd
 * splits the agent's arguments at whitespace (portableLabels; the others are named in
 * `omittedLabels`, for the agent command line). The env file is written before the package is
 * installed, so the package's postinst finds a server URL and starts the unit; `--force-confold` (apt's module's default) keeps that file instead of
 * asking about the packaged default. Every value is quoted for where it lands: shell words via
 * shellWord, env-file values bare, in double quotes or in single quotes (envValue: what sh and
 * systemd's EnvironmentFile= both read back), YAML as JSON strings, and the env file's content as `!unsafe` so Ansible does not evaluate a
 * label value like `{{ lookup('pipe', …) }}` on the control node. Pure.
 */
import { shellWord } from '../shell-word';
import type { AgentRelease } from './manifest';

/**
 * The agent's env file (`/etc/vfio-fleet/agent.env`) as the packaging's unit reads it
 * (`ExecStart=… run --server ${VFIO_FLEET_SERVER_URL} $VFIO_FLEET_AGENT_ARGS`): one place to change
 * should the packaging change it.
 */
export const AGENT_ENV = {
  file: '/etc/vfio-fleet/agent.env',
  /** The server's URL (http[s]://host[:port], no trailing slash). */
  server: 'VFIO_FLEET_SERVER_URL',
  /**
   * The enrollment token: in the environment, readable only by root, where on the command line
   * (`--token`) every local user could read it in `ps` for as long as the agent runs.
   */
  token: 'VFIO_FLEET_TOKEN',
  /** `vfio-fleet-agent run`'s other arguments (--label k=v, --allow-rebind), split at whitespace. */
  args: 'VFIO_FLEET_AGENT_ARGS',
} as const;

/**
 * What a label value may hold to travel in VFIO_FLEET_AGENT_ARGS: systemd splits it at whitespace
 * and never unquotes, so only characters that need no quoting (the packaging's install.sh refuses
 * any other, with the same list). Keys already follow the protocol's rule, which fits.
 */
const PORTABLE_LABEL_VALUE = /^[A-Za-z0-9_.:/@+,=~-]*$/;

/** The unit the packages install. */
export const AGENT_SERVICE = 'vfio-fleet-agent';

export interface InstallInput {
  /** This server's URL as the host reaches it, without a trailing slash. */
  server: string;
  token: string;
  labels: Record<string, string>;
  allowRebind?: boolean;
  /** The packaged agent, or null when this server has none (`npm run build -w packaging`). */
  release: AgentRelease | null;
}

export interface InstallCommands {
  /** Whether this server can hand out the agent (the script and the package 503 otherwise). */
  packaged: boolean;
  version: string | null;
  script: string;
  /** Null when no .deb is packaged. */
  deb: string | null;
  ansible: string | null;
  /** Label keys left out of these commands (their values cannot travel in the env file). */
  omittedLabels: string[];
}

/** The labels the install paths can carry, and the keys of those they cannot. */
export function portableLabels(labels: Record<string, string>): {
  labels: Record<string, string>;
  omitted: string[];
} {
  const kept: Record<string, string> = {};
  const omitted: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    if (PORTABLE_LABEL_VALUE.test(value)) kept[key] = value;
    else omitted.push(key);
  }
  return { labels: kept, omitted };
}

/**
 * An env-file value both systemd's EnvironmentFile= and `sh` (should anyone source the file) read
 * back exactly: bare, or in double quotes when it holds nothing either treats specially there
 * (easier to read inside a command that quotes the whole line again), else in single quotes.
 */
export function envValue(value: string): string {
  if (value !== '' && /^[^"\\$`\n]*$/.test(value) && shellWord(value) !== value) {
    return `"${value}"`;
  }
  return shellWord(value);
}

/** `run`'s arguments other than the token (it has its own variable): labels, --allow-rebind. */
function agentArgs(input: Pick<InstallInput, 'labels' | 'allowRebind'>): string[] {
  const words: string[] = [];
  for (const [key, value] of Object.entries(input.labels)) words.push('--label', `${key}=${value}`);
  if (input.allowRebind === true) words.push('--allow-rebind');
  return words;
}

/** The env file's lines (`KEY=value`); `labels` must be portableLabels' already. */
export function agentEnvLines(input: Omit<InstallInput, 'release'>): string[] {
  return [
    `${AGENT_ENV.server}=${envValue(input.server.replace(/\/+$/, ''))}`,
    `${AGENT_ENV.token}=${envValue(input.token)}`,
    `${AGENT_ENV.args}=${envValue(agentArgs(input).join(' '))}`,
  ];
}

/**
 * The command line for a host where the agent is installed already: the token in the agent's own
 * variable, on the command's environment, not in its arguments, where every local user could
 * read it in `ps` for as long as the agent runs. Every label travels here, whatever its value.
 */
export function agentCommand(
  server: string,
  token: string,
  labels: Record<string, string>,
  allowRebind = false,
): string {
  const words = [
    'vfio-fleet-agent',
    'run',
    '--server',
    server,
    ...agentArgs({ labels, allowRebind }),
  ];
  return `${AGENT_ENV.token}=${shellWord(token)} ${words.map(shellWord).join(' ')}`;
}

export function downloadUrl(server: string, name: string): string {
  return `${server.replace(/\/+$/, '')}/downloads/${name}`;
}

function scriptCommand(input: InstallInput): string {
  // install.sh takes the token as an argument (it is gone when the script ends) and writes it to
  // the env file's own variable.
  const words = ['--token', input.token, ...agentArgs(input)];
  const url = `${input.server.replace(/\/+$/, '')}/install.sh`;
  return `curl -fsSL ${shellWord(url)} | sudo sh -s -- ${words.map(shellWord).join(' ')}`;
}

function debCommand(input: InstallInput, deb: NonNullable<AgentRelease['deb']>): string {
  const dir = AGENT_ENV.file.slice(0, AGENT_ENV.file.lastIndexOf('/'));
  const lines = [
    `curl -fsSLO ${shellWord(downloadUrl(input.server, deb.name))}`,
    `echo ${shellWord(`${deb.sha256}  ${deb.name}`)} | sha256sum -c -`,
    `sudo install -d -m 0755 ${dir}`,
    `printf '%s\\n' ${agentEnvLines(input).map(shellWord).join(' ')} | sudo sh -c ${shellWord(`umask 077 && cat > ${AGENT_ENV.file}`)}`,
    `sudo apt-get install -y -o Dpkg::Options::=--force-confold ${shellWord(`./${deb.name}`)}`,
    `sudo systemctl enable ${AGENT_SERVICE}`,
    `sudo systemctl restart ${AGENT_SERVICE}`,
  ];
  return lines.join(' && \\\n  ');
}

/** A YAML scalar: a JSON string is a valid YAML double-quoted scalar. */
const yaml = (value: string) => JSON.stringify(value);

function ansiblePlaybook(input: InstallInput, deb: NonNullable<AgentRelease['deb']>): string {
  const dest = `/tmp/${deb.name}`;
  const env = `${agentEnvLines(input).join('\n')}\n`;
  const dir = AGENT_ENV.file.slice(0, AGENT_ENV.file.lastIndexOf('/'));
  return [
    '- name: Install the vfio-fleet agent',
    '  hosts: all',
    '  become: true',
    '  tasks:',
    '    - name: Download the agent package from the fleet server',
    '      ansible.builtin.get_url:',
    `        url: ${yaml(downloadUrl(input.server, deb.name))}`,
    `        dest: ${yaml(dest)}`,
    `        checksum: ${yaml(`sha256:${deb.sha256}`)}`,
    '        mode: "0644"',
    // The configuration goes in before the package (whose postinst then starts the agent), so on
    // a new host its directory does not exist yet: copy does not create it.
    '    - name: Create the configuration directory',
    '      ansible.builtin.file:',
    `        path: ${yaml(dir)}`,
    '        state: directory',
    '        owner: root',
    '        group: root',
    '        mode: "0755"',
    '    - name: Configure the agent',
    '      ansible.builtin.copy:',
    `        dest: ${yaml(AGENT_ENV.file)}`,
    `        content: !unsafe ${yaml(env)}`,
    '        owner: root',
    '        group: root',
    '        mode: "0600"',
    '      notify: Restart the agent',
    '    - name: Install the agent package',
    '      ansible.builtin.apt:',
    `        deb: ${yaml(dest)}`,
    '    - name: Run the agent',
    '      ansible.builtin.systemd_service:',
    `        name: ${AGENT_SERVICE}`,
    '        enabled: true',
    '        state: started',
    '  handlers:',
    '    - name: Restart the agent',
    '      ansible.builtin.systemd_service:',
    `        name: ${AGENT_SERVICE}`,
    '        state: restarted',
    '',
  ].join('\n');
}

export function installCommands(request: InstallInput): InstallCommands {
  const { labels, omitted } = portableLabels(request.labels);
  const input = { ...request, labels };
  const deb = input.release?.deb ?? null;
  return {
    omittedLabels: omitted,
    packaged: input.release !== null && input.release.executable !== null,
    version: input.release?.version ?? null,
    script: scriptCommand(input),
    deb: deb === null ? null : debCommand(input, deb),
    ansible: deb === null ? null : ansiblePlaybook(input, deb),
  };
}
