// Runs in the guest after /init has switched root into systemd (systemd 252 as PID 1, the real
// kernel): the agent binds and restores a device from inside the sandbox of the packaged unit
// (packaging/systemd/vfio-fleet-agent.service, shipped here as /kt/vfio-fleet-agent.service),
// then once more under each variant that the unit's comments and docs/deployment.md claim would
// break binding. Each run is a oneshot unit generated from the packaged unit's text: its [Service]
// options as they are (or with the one variant's change), ExecStart replaced by the agent command.
// Prints one JSON document between markers on the console; the host test asserts on it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { read, view } from './view.mjs';

const AGENT = '/kt/vfio-fleet-agent.mjs';
const PACKAGED_UNIT = '/kt/vfio-fleet-agent.service';
const UNIT_DIR = '/run/systemd/system';
const OUT_DIR = '/run/kt';
const started = Date.now();

function sh(command) {
  const r = spawnSync('/bin/sh', ['-c', command], {
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Options whose value the oneshot run must not take from the packaged unit. */
const REPLACED = new Set([
  'Type',
  'ExecStart',
  'EnvironmentFile',
  'Restart',
  'RestartSec',
  'RestartPreventExitStatus',
  'TimeoutStopSec',
  'StandardOutput',
  'StandardError',
]);

/**
 * The packaged unit's text turned into a oneshot run of `args`: [Unit] without the network
 * ordering and default dependencies (this guest boots no targets), [Service] as packaged except
 * for what REPLACED names and the variant's `set`/`unset`, no [Install].
 */
export function unitFor(packaged, name, args, { set = {}, unset = [] } = {}) {
  const out = [];
  let section = '';
  const seen = new Set();
  for (const raw of packaged.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header !== null) {
      if (section === 'Service') {
        for (const [key, value] of Object.entries(set)) {
          if (!seen.has(key)) out.push(`${key}=${value}`);
        }
      }
      section = header[1];
      if (section === 'Install') continue;
      out.push(line);
      if (section === 'Unit') out.push('DefaultDependencies=no');
      if (section === 'Service') {
        out.push('Type=oneshot');
        out.push(`ExecStart=/usr/bin/node ${AGENT} ${args.join(' ')}`);
        out.push(`StandardOutput=file:${OUT_DIR}/${name}.out`);
        out.push(`StandardError=file:${OUT_DIR}/${name}.err`);
        out.push('Environment=NO_COLOR=1');
      }
      continue;
    }
    if (section === 'Install') continue;
    const key = line.split('=', 1)[0];
    if (section === 'Unit' && (key === 'Wants' || key === 'After')) continue;
    if (section === 'Service') {
      if (REPLACED.has(key) || unset.includes(key)) continue;
      if (key in set) {
        if (!seen.has(key)) out.push(`${key}=${set[key]}`);
        seen.add(key);
        continue;
      }
    }
    out.push(line);
  }
  if (section === 'Service') {
    for (const [key, value] of Object.entries(set)) if (!seen.has(key)) out.push(`${key}=${value}`);
  }
  return `${out.join('\n')}\n`;
}

function systemctl(...args) {
  return sh(`systemctl ${args.join(' ')}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function properties(unit, names) {
  const r = systemctl('show', unit, ...names.map((n) => `-p ${n}`));
  return Object.fromEntries(
    r.stdout
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
}

/**
 * The packaged unit itself, unchanged, running the daemon (`run --server`) the way the package
 * installs it: agent.env, /usr/bin/vfio-fleet-agent. A drop-in changes only what this guest
 * lacks (default dependencies on targets it has no files for; journald, so output goes to a
 * file). No server listens, so the agent must be active, keep dialling (a refused connection,
 * not a refused socket: RestrictAddressFamilies= lets AF_INET through) and stop cleanly.
 */
/** Token-shaped (base64url, as the server issues them); no server checks it here. */
const TOKEN = 'a2VybmVsLXRlc3QtdG9rZW4tb2YtNDMtY2hhcmFjdGVy';

async function daemon(packaged) {
  mkdirSync('/etc/vfio-fleet', { recursive: true });
  writeFileSync(
    '/etc/vfio-fleet/agent.env',
    'VFIO_FLEET_SERVER_URL=http://127.0.0.1:9\n' +
      `VFIO_FLEET_TOKEN=${TOKEN}\n` +
      'VFIO_FLEET_AGENT_ARGS=--label rack=kt --allow-rebind\n' +
      'VFIO_FLEET_LOG_LEVEL=debug\n',
    { mode: 0o600 },
  );
  // The package installs the single executable here; in this guest node runs the same bundle.
  writeFileSync('/usr/bin/vfio-fleet-agent', `#!/bin/sh\nexec /usr/bin/node ${AGENT} "$@"\n`, {
    mode: 0o755,
  });
  const unit = 'vfio-fleet-agent.service';
  writeFileSync(`/etc/systemd/system/${unit}`, packaged);
  mkdirSync(`/etc/systemd/system/${unit}.d`, { recursive: true });
  writeFileSync(
    `/etc/systemd/system/${unit}.d/kt-guest.conf`,
    `[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=file:${OUT_DIR}/daemon.log\n` +
      `StandardError=file:${OUT_DIR}/daemon.log\n`,
  );
  const reload = systemctl('daemon-reload');
  const start = systemctl('start', unit);
  // Long enough for node to start under TCG, scan and dial (and be refused) a few times.
  let log = '';
  for (let i = 0; i < 30; i += 1) {
    await sleep(1000);
    log = read(`${OUT_DIR}/daemon.log`) ?? '';
    if ((log.match(/"connection error"/g) ?? []).length >= 2) break;
  }
  const running = properties(unit, ['ActiveState', 'SubState', 'NRestarts', 'MainPID']);
  // What ps shows every user: the token must not be there (it travels in the environment).
  const cmdline = (read(`/proc/${running.MainPID}/cmdline`) ?? '').replaceAll('\0', ' ');
  const environHasToken = (read(`/proc/${running.MainPID}/environ`) ?? '').includes(TOKEN);
  const stateDir = sh('stat -c %a /var/lib/vfio-fleet').stdout.trim();
  const stop = systemctl('stop', unit);
  const stopped = properties(unit, ['ActiveState', 'Result', 'ExecMainCode', 'ExecMainStatus']);
  return {
    reload: reload.code,
    start: { code: start.code, stderr: start.stderr },
    running,
    stateDirMode: stateDir,
    cmdline,
    tokenInCmdline: cmdline.includes(TOKEN),
    environHasToken,
    stop: { code: stop.code, stderr: stop.stderr },
    stopped,
    log: read(`${OUT_DIR}/daemon.log`) ?? '',
  };
}

const result = { ok: true, error: null, systemd: null, runs: [] };
try {
  mkdirSync(OUT_DIR, { recursive: true });
  mkdirSync(UNIT_DIR, { recursive: true });
  result.systemd = sh('systemctl --version').stdout.split('\n')[0] ?? null;
  result.pid1 = read('/proc/1/comm');
  const packaged = readFileSync(PACKAGED_UNIT, 'utf8');
  result.packagedUnit = packaged;
  const devs = view().devices;
  const e1000e = Object.keys(devs).find(
    (a) => devs[a].vendor === '0x8086' && devs[a].device === '0x10d3',
  );
  if (e1000e === undefined) throw new Error('no e1000e in this guest');
  result.device = e1000e;

  const run = (name, args, variant = {}) => {
    const unit = `kt-${name}.service`;
    const text = unitFor(packaged, name, args, variant);
    writeFileSync(`${UNIT_DIR}/${unit}`, text);
    const reload = systemctl('daemon-reload');
    const vfioLoadedBefore = existsSync('/sys/module/vfio_pci');
    const before = view();
    const t = Date.now();
    // A oneshot's start job ends when ExecStart exits: this blocks for the agent's whole run.
    const start = systemctl('start', unit);
    const ms = Date.now() - t;
    const after = view();
    const state = properties(unit, ['Result', 'ExecMainStatus', 'ExecMainCode']);
    result.runs.push({
      name,
      args,
      variant,
      unit: text,
      reload: reload.code,
      start: { code: start.code, stderr: start.stderr },
      result: state.Result ?? null,
      status: state.ExecMainStatus === undefined ? null : Number(state.ExecMainStatus),
      stdout: read(`${OUT_DIR}/${name}.out`) ?? '',
      stderr: read(`${OUT_DIR}/${name}.err`) ?? '',
      vfioLoadedBefore,
      vfioLoadedAfter: existsSync('/sys/module/vfio_pci'),
      before,
      after,
      ms,
    });
    // A failed oneshot stays "failed"; the next run of the same name must start afresh.
    systemctl('reset-failed', unit);
  };

  // The earlier busybox scenario left vfio_pci loaded: unload it so that the runs load it
  // themselves, from inside the sandbox (its dependencies vfio_pci_core, vfio stay loaded).
  result.rmmod = sh('rmmod vfio_pci');
  // 1. ProtectKernelModules=yes: /lib/modules is gone and module syscalls are refused, so the
  //    plan's first step (modprobe vfio_pci) fails and nothing changes.
  run('protect-kernel-modules', ['bind', e1000e], { set: { ProtectKernelModules: 'yes' } });
  // 2. The packaged sandbox: modprobe, driver_override, unbind, drivers_probe, /dev/vfio check.
  run('packaged-bind', ['bind', e1000e]);
  run('packaged-restore', ['restore', e1000e]);
  // 3. Only /sys/bus/pci writable: driver_override is reached through the devices/ link, which
  //    resolves into /sys/devices, still read-only.
  run('rw-bus-pci-only', ['bind', e1000e], { set: { ReadWritePaths: '/sys/bus/pci' } });
  // 4. ProtectKernelTunables=yes without ReadWritePaths=: all of /sys read-only.
  run('no-rw-paths', ['bind', e1000e], { unset: ['ReadWritePaths'] });
  // 5. PrivateDevices=yes: the devices do move, but /dev/vfio/<group> is not in the private /dev,
  //    so the final check fails and the rollback must bring the device back.
  run('private-devices', ['bind', e1000e], { set: { PrivateDevices: 'yes' } });
  result.daemon = await daemon(packaged);
  result.final = view();
} catch (error) {
  result.ok = false;
  result.error = error instanceof Error ? `${error.stack}` : String(error);
}
result.ms = Date.now() - started;
const base64 = Buffer.from(JSON.stringify(result)).toString('base64');
const lines = base64.match(/.{1,76}/g) ?? [];
writeFileSync(
  '/dev/console',
  `===KT-SANDBOX-BEGIN===\n${lines.join('\n')}\n===KT-SANDBOX-END===\n`,
);
