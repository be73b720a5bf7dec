// bind, restore and status as an operator runs them: real child processes of the built bundle on
// generated fixture trees, writing through the kernel model (--simulate).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import {
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  buildScenario,
  corruptDevice,
  type ScenarioName,
  scenario,
} from '@vfio-fleet/host-fixtures';
import { afterEach, describe, expect, it } from 'vitest';
import { type AgentRun, agentDir, repoRoot, runAgent } from './helpers/run-agent';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  tempDirs.push(dir);
  return dir;
}

/** A fixture host whose modules.alias also has nvidia's id table (see rebind-executor.test). */
async function fixture(name: ScenarioName = 'dual-gpu'): Promise<{ root: string; state: string }> {
  const root = await tempDir('local-cmd-root-');
  const base = scenario(name).modulesAlias;
  await buildScenario(root, name, {
    modulesAlias: base === null ? null : `${base}alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia\n`,
  });
  // A state dir path that does not exist yet: commands that must not write can be caught.
  return { root, state: path.join(await tempDir('local-cmd-state-'), 'state') };
}

/** Every file (with content) and link under a root, to prove a command changed nothing. */
async function treeListing(root: string): Promise<string> {
  const lines: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const entry of (await readdir(path.join(root, rel))).sort()) {
      const child = rel === '' ? entry : `${rel}/${entry}`;
      const info = await lstat(path.join(root, child));
      if (info.isSymbolicLink())
        lines.push(`${child} -> ${await readlink(path.join(root, child))}`);
      else if (info.isDirectory()) await walk(child);
      else lines.push(`${child} = ${await readFile(path.join(root, child), 'utf8')}`);
    }
  };
  await walk('');
  return lines.join('\n');
}

async function driverOf(root: string, address: string): Promise<string | null> {
  try {
    return path.basename(await readlink(path.join(root, 'sys/bus/pci/devices', address, 'driver')));
  } catch {
    return null;
  }
}

/** runAgent, but without blocking the event loop, so two agents can run at once. */
function runAgentAsync(args: readonly string[]): Promise<AgentRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [path.join(agentDir, 'bin/vfio-fleet-agent.mjs'), ...args],
      {
        cwd: repoRoot,
        env: { ...process.env, NO_COLOR: '1' },
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const sim = (root: string, state: string) => ['--root', root, '--simulate', '--state-dir', state];

describe('bind / restore (child processes, --simulate)', () => {
  it('--dry-run prints the plan and writes nothing: not the tree, not the state dir', async () => {
    const { root, state } = await fixture();
    const before = await treeListing(root);
    const run = runAgent(['bind', GPU, ...sim(root, state), '--dry-run']);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain(`Plan: ${GPU} to vfio (IOMMU group 21: ${GPU}, ${AUDIO})`);
    expect(run.stdout).toContain(`$ echo vfio-pci > /sys/bus/pci/devices/${GPU}/driver_override`);
    expect(run.stdout).toContain('Dry run: nothing was written.');
    expect(await treeListing(root)).toBe(before);
    expect(existsSync(state)).toBe(false);
  });

  it('bind --persist moves the group to vfio-pci, verified; status agrees; restore gives it back', async () => {
    const { root, state } = await fixture();
    const bind = runAgent(['bind', GPU, ...sim(root, state), '--persist']);
    expect(bind.stderr).toBe('');
    expect(bind.status).toBe(0);
    // The plan first, then each step as it ran, then the outcome.
    const planAt = bind.stdout.indexOf('Plan:');
    const runAt = bind.stdout.indexOf('Running (job local-');
    expect(planAt).toBeGreaterThanOrEqual(0);
    expect(runAt).toBeGreaterThan(planAt);
    expect(bind.stdout).toMatch(/ok +1\. modprobe vfio_pci/);
    expect(bind.stdout).toContain(
      `Succeeded: ${GPU} vfio-pci, ${AUDIO} vfio-pci; /dev/vfio/21 present`,
    );
    expect(bind.stdout).toContain('bindings.json');
    expect(await driverOf(root, GPU)).toBe('vfio-pci');
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(existsSync(path.join(root, 'dev/vfio/21'))).toBe(true);

    const persisted = JSON.parse(await readFile(path.join(state, 'bindings.json'), 'utf8'));
    expect(
      persisted.bindings.map((b: { address: string; driver: string }) => [b.address, b.driver]),
    ).toEqual([
      [GPU, 'vfio-pci'],
      [AUDIO, 'vfio-pci'],
    ]);
    expect(persisted.bindings[0]).toMatchObject({ vendorId: '10de', deviceId: '2204' });

    const status = runAgent(['status', '--root', root, '--state-dir', state, '--json']);
    expect(status.status).toBe(0);
    const report = JSON.parse(status.stdout);
    expect(report.problems).toEqual([]);
    expect(report.devices.map((d: { address: string }) => d.address)).toEqual([GPU, AUDIO]);

    // scan --json says who keeps each binding; the table has no "Lost at reboot" line.
    const kept = runAgent(['scan', '--root', root, '--state-dir', state, '--json']);
    expect(kept.status).toBe(0);
    const keptDevices: Array<{ address: string; keptBy: unknown[] }> = JSON.parse(
      kept.stdout,
    ).devices;
    expect(keptDevices.find((d) => d.address === GPU)?.keptBy).toEqual([
      { keeper: 'vfio-fleet', driver: 'vfio-pci', source: 'bindings.json' },
    ]);
    expect(runAgent(['scan', '--root', root, '--state-dir', state]).stdout).not.toContain(
      'Lost at reboot',
    );
    // Without --state-dir a --root capture has no persisted bindings of this machine's.
    expect(runAgent(['scan', '--root', root]).stdout).toMatch(
      new RegExp(`Lost at reboot\\s+${GPU}, ${AUDIO}: on vfio`),
    );

    const restore = runAgent(['restore', AUDIO, ...sim(root, state), '--json']);
    expect(restore.stderr).toBe('');
    expect(restore.status).toBe(0);
    const out = JSON.parse(restore.stdout);
    expect(out.outcome.status).toBe('succeeded');
    expect(out.forgotten.map((b: { address: string }) => b.address)).toEqual([GPU, AUDIO]);
    expect(await driverOf(root, GPU)).toBe('nvidia');
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');
    expect(existsSync(path.join(root, 'dev/vfio/21'))).toBe(false);
    const after = JSON.parse(await readFile(path.join(state, 'bindings.json'), 'utf8'));
    expect(after.bindings).toEqual([]);

    // Giving back a group already on the host is success, not a refusal.
    const again = runAgent(['restore', GPU, ...sim(root, state)]);
    expect(again.status).toBe(0);
    expect(again.stdout).toContain('nothing to do');

    // Without --persist the bind says that a reboot undoes it.
    expect(bind.stdout).not.toContain('Not kept across reboots');
    const plain = runAgent(['bind', GPU, ...sim(root, state)]);
    expect(plain.status, plain.stderr).toBe(0);
    expect(plain.stdout).toContain(
      'Not kept across reboots: the group returns to its host drivers',
    );
  });

  it('refuses a host-critical device even with --force (exit 3), writing nothing', async () => {
    const { root, state } = await fixture();
    const before = await treeListing(root);
    const run = runAgent(['bind', '0000:4b:00.0', ...sim(root, state), '--force']);
    expect(run.status).toBe(3);
    expect(run.stderr).toContain('[host-critical]');
    expect(await treeListing(root)).toBe(before);
  });

  it('refuses a group with an unreadable member, either way and even with --force (exit 3), writing nothing', async () => {
    const { root, state } = await fixture();
    await corruptDevice(root, AUDIO);
    const before = await treeListing(root);
    const bind = runAgent(['bind', GPU, ...sim(root, state), '--force']);
    expect(bind.status, bind.stderr).toBe(3);
    expect(bind.stderr).toContain('bind refused (group-unreadable)');
    expect(bind.stderr).toContain(`${AUDIO} (vendor reads "zzz"`);
    expect(bind.stderr).toContain('[group-member-unreadable]');
    const restore = runAgent(['restore', GPU, ...sim(root, state)]);
    expect(restore.status, restore.stderr).toBe(3);
    expect(restore.stderr).toContain('restore refused (group-unreadable)');
    expect(await treeListing(root)).toBe(before);
    expect(existsSync(state)).toBe(false);
  });

  it('an SR-IOV PF with VFs needs --force (exit 3, reasons listed)', async () => {
    const { root, state } = await fixture('mlx5-vf');
    const run = runAgent(['bind', '0000:41:00.0', ...sim(root, state)]);
    expect(run.status).toBe(3);
    expect(run.stderr).toContain('needs force');
    expect(run.stderr).toContain('[sriov-vfs-enabled]');
  });

  it('a failed step rolled back exits 4; a rollback that cannot finish exits 5 and names the device', async () => {
    const { root, state } = await fixture();
    const before = await treeListing(root);
    const rolledBack = runAgent([
      'bind',
      GPU,
      ...sim(root, state),
      '--simulate-fault',
      'write-fails:/sys/bus/pci/drivers/snd_hda_intel/unbind:EBUSY',
    ]);
    expect(rolledBack.status).toBe(4);
    expect(rolledBack.stdout).toMatch(
      /FAILED +7\. echo 0000:17:00\.1 > \/sys\/bus\/pci\/drivers\/snd_hda_intel\/unbind/,
    );
    expect(rolledBack.stdout).toContain('EBUSY');
    expect(rolledBack.stdout).toContain('Rolled back: every device is as before');
    expect(rolledBack.stderr).toContain('bind rolled back');
    expect(await driverOf(root, GPU)).toBe('nvidia');
    expect(await driverOf(root, AUDIO)).toBe('snd_hda_intel');

    // vfio-pci refuses the GPU, and nvidia's bind fails on the way back: the GPU is left unbound.
    const failed = runAgent([
      'bind',
      GPU,
      ...sim(root, state),
      '--json',
      '--simulate-fault',
      'bind-refuses:vfio-pci',
      '--simulate-fault',
      'write-fails:/sys/bus/pci/drivers/nvidia/bind:EIO',
    ]);
    expect(failed.status).toBe(5);
    const out = JSON.parse(failed.stdout);
    expect(out.outcome.status).toBe('failed');
    expect(out.outcome.reason.code).toBe('rollback-incomplete');
    expect(out.outcome.reason.message).toContain(`${GPU}: driver none (was nvidia)`);
    expect(failed.stderr).toContain('bind failed');
    expect(before).not.toBe(await treeListing(root));
  });

  it('two bind processes on one group take turns through the lock file', async () => {
    const { root, state } = await fixture();
    const [a, b] = await Promise.all([
      runAgentAsync(['bind', GPU, ...sim(root, state), '--json']),
      runAgentAsync(['bind', AUDIO, ...sim(root, state), '--json']),
    ]);
    expect([a.status, b.status]).toEqual([0, 0]);
    const outcomes = [JSON.parse(a.stdout).outcome, JSON.parse(b.stdout).outcome];
    // Whichever got the group second planned from the first one's result: nothing left to do.
    const befores = outcomes.map((o: { before: Array<{ driver: string }> }) =>
      o.before.map((x) => x.driver).join(','),
    );
    expect(befores.sort()).toEqual(['nvidia,snd_hda_intel', 'vfio-pci,vfio-pci']);
    expect(await driverOf(root, GPU)).toBe('vfio-pci');
    expect(await driverOf(root, AUDIO)).toBe('vfio-pci');
    expect(await readdir(path.join(state, 'locks'))).toEqual([]);
  });

  it('--simulate-fault needs --simulate and a known form', async () => {
    const { root, state } = await fixture();
    const bad = runAgent(['bind', GPU, ...sim(root, state), '--simulate-fault', 'melts:gpu']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('unknown kind "melts"');
  });

  it('--root without --simulate is a usage error: the live sysfs writer only writes /', async () => {
    const { root, state } = await fixture();
    const run = runAgent(['bind', GPU, '--root', root, '--state-dir', state, '--dry-run']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--simulate');
  });

  it('lists bind, restore and status in the main usage', () => {
    const run = runAgent(['--help']);
    expect(run.status).toBe(0);
    for (const name of ['bind', 'restore', 'status']) expect(run.stdout).toContain(`  ${name} `);
  });
});

describe('status (child process)', () => {
  it('flags a device on vfio that nothing persists: lost at reboot', async () => {
    const { root, state } = await fixture('vfio-bound');
    const run = runAgent(['status', '--root', root, '--state-dir', state]);
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(`${GPU}\\s+10de:2204\\s+vfio-pci\\s+vfio-pci\\s+nothing \\(lost at reboot\\)`),
    );
    expect(run.stdout).toContain(`[not-persisted] ${GPU} is on vfio-pci but nothing persists it`);
  });

  it('scan names driverctl and modprobe.d as keepers, and a keeper to a host driver as none', async () => {
    const { root } = await fixture('vfio-bound');
    await mkdir(path.join(root, 'etc/driverctl.d'), { recursive: true });
    await writeFile(path.join(root, `etc/driverctl.d/pci-${AUDIO}`), 'snd_hda_intel\n');
    await mkdir(path.join(root, 'etc/modprobe.d'), { recursive: true });
    await writeFile(
      path.join(root, 'etc/modprobe.d/vfio.conf'),
      'options vfio_pci ids=10de:2204\n',
    );
    const run = runAgent(['scan', '--root', root, '--json']);
    expect(run.status).toBe(0);
    const devices: Array<{ address: string; keptBy: unknown[] }> = JSON.parse(run.stdout).devices;
    expect(devices.find((d) => d.address === GPU)?.keptBy).toEqual([
      { keeper: 'modprobe.d', driver: 'vfio-pci', source: '/etc/modprobe.d/vfio.conf' },
    ]);
    expect(devices.find((d) => d.address === AUDIO)?.keptBy).toEqual([
      { keeper: 'driverctl', driver: 'snd_hda_intel', source: `/etc/driverctl.d/pci-${AUDIO}` },
    ]);
    const table = runAgent(['scan', '--root', root]).stdout;
    expect(table).toMatch(new RegExp(`Lost at reboot\\s+${AUDIO}: on vfio`));
    expect(table).not.toMatch(new RegExp(`Lost at reboot\\s+${GPU}`));
  });

  it('flags driverctl disagreeing with modprobe.d, and a binding not in effect', async () => {
    const { root, state } = await fixture('vfio-bound');
    await mkdir(path.join(root, 'etc/driverctl.d'), { recursive: true });
    await writeFile(path.join(root, `etc/driverctl.d/pci-${GPU}`), 'nvidia\n');
    await mkdir(path.join(root, 'etc/modprobe.d'), { recursive: true });
    await writeFile(
      path.join(root, 'etc/modprobe.d/vfio.conf'),
      '# passthrough\noptions vfio-pci ids=10de:2204,10de:1aef disable_vga=1\nsoftdep nvidia pre: vfio-pci\n',
    );
    const run = runAgent(['status', '--root', root, '--state-dir', state, '--json']);
    expect(run.status).toBe(0);
    const report = JSON.parse(run.stdout);
    const gpu = report.devices.find((d: { address: string }) => d.address === GPU);
    expect(gpu.claims).toEqual([
      { mechanism: 'driverctl', driver: 'nvidia', source: `/etc/driverctl.d/pci-${GPU}` },
      { mechanism: 'modprobe.d', driver: 'vfio-pci', source: '/etc/modprobe.d/vfio.conf' },
    ]);
    const codes = report.problems.map(
      (p: { code: string; address: string }) => `${p.code}@${p.address}`,
    );
    expect(codes).toEqual([`mechanisms-disagree@${GPU}`, `not-in-effect@${GPU}`]);

    const text = runAgent(['status', '--root', root, '--state-dir', state]);
    expect(text.stdout).toContain('Contradictions (2)');
    expect(text.stdout).toContain(
      `driverctl (/etc/driverctl.d/pci-${GPU}) binds it to nvidia, but it is on vfio-pci`,
    );
  });

  it('a damaged bindings.json is reported, not a crash (exit 2)', async () => {
    const { root, state } = await fixture();
    await mkdir(state, { recursive: true });
    await writeFile(path.join(state, 'bindings.json'), '{"version": 1, "bindings": [');
    const run = runAgent(['status', '--root', root, '--state-dir', state]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('bindings.json is not JSON');
  });

  it('flags a persisted binding that is not in effect', async () => {
    const { root, state } = await fixture();
    await mkdir(state, { recursive: true });
    const record = {
      address: GPU,
      vendorId: '10de',
      deviceId: '2204',
      driver: 'vfio-pci',
      force: false,
      persistedAt: '2026-11-23T00:00:00.000Z',
    };
    await writeFile(
      path.join(state, 'bindings.json'),
      JSON.stringify({ version: 1, bindings: [record] }),
    );
    const run = runAgent(['status', '--root', root, '--state-dir', state, '--json']);
    expect(run.status).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.problems).toEqual([
      {
        code: 'not-in-effect',
        address: GPU,
        message: `${GPU}: persisted binding binds it to vfio-pci, but it is on nvidia`,
      },
    ]);
  });
});
