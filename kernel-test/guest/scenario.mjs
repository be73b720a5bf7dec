// Runs inside the guest as part of /init: the real agent against the real `/`, step by step, with
// the guest's own view of sysfs recorded after each step. Prints one JSON document on stdout; the
// host test asserts on it and replays the same steps against the kernel model on the capture.
import { spawn, spawnSync } from 'node:child_process';
import { readlinkSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { linkBase, read, view } from './view.mjs';

const AGENT = '/kt/vfio-fleet-agent.mjs';
const STATE_DIR = '/tmp/state';
const started = Date.now();

function agent(args) {
  const t = Date.now();
  const r = spawnSync('/usr/bin/node', [AGENT, ...args], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
    maxBuffer: 64 * 1024 * 1024,
  });
  return {
    args,
    code: r.status,
    signal: r.signal,
    stdout: r.stdout,
    stderr: r.stderr,
    ms: Date.now() - t,
  };
}

/**
 * The agent without waiting on it: a command blocked in the kernel must not take the scenario
 * with it. `limited` resolves with the run, or null if it is still running after `limitMs`.
 */
function agentAsync(args, limitMs) {
  const t = Date.now();
  const child = spawn('/usr/bin/node', [AGENT, ...args], {
    env: { ...process.env, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c) => {
    stdout += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c) => {
    stderr += c;
  });
  const exited = new Promise((resolve) =>
    child.once('close', (code, signal) =>
      resolve({ args, code, signal, stdout, stderr, ms: Date.now() - t }),
    ),
  );
  return { exited, limited: within(exited, limitMs) };
}

/** `promise`'s value, or null once `ms` have passed; its timer never outlives it. */
function within(promise, ms) {
  let timer;
  return Promise.race([
    promise,
    new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Polls `check` until it holds (true) or `ms` have passed (false). */
async function until(check, ms) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) return false;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return true;
}

function sh(command) {
  const r = spawnSync('/bin/sh', ['-c', command], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A VM's grip on a device (guest/vfio-hold.c: group, type1 container, device fd, as QEMU takes
 * them), with QEMU's `-name guest=` on its command line. Resolves once the fd is open.
 */
function hold(address, { anon = false } = {}) {
  const group = path.basename(readlinkSync(`/sys/bus/pci/devices/${address}/iommu_group`));
  const args = [
    '-name',
    'guest=kt-vm,debug-threads=on',
    ...(anon ? ['--anon'] : []),
    group,
    address,
  ];
  // argv[0] as QEMU's, so the agent reads the command line as a VMM's (comm stays vfio-hold).
  const child = spawn('/kt/vfio-hold', args, {
    argv0: 'qemu-system-x86_64',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`vfio-hold ${address}: no answer in 10 s`)),
      10_000,
    );
    child.stdout.on('data', (chunk) => {
      out += chunk;
      if (!out.includes('\n')) return;
      clearTimeout(timer);
      if (!out.startsWith('held ')) reject(new Error(`vfio-hold ${address}: ${out.trim()}`));
      else {
        const exited = new Promise((done) => child.once('exit', done));
        const release = async () => {
          child.kill('SIGTERM');
          await exited;
        };
        resolve({ pid: child.pid, group: Number(group), anon, release });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vfio-hold ${address} exited ${code}: ${out.trim()}`));
    });
  });
}

const result = { ok: true, error: null, uname: read('/proc/sys/kernel/osrelease'), steps: [] };
try {
  result.cmdline = read('/proc/cmdline');
  result.dmesgIommu = sh('dmesg | grep -iE "DMAR|IOMMU|remapping" | tail -n 40').stdout;
  result.initial = view();

  const scan = agent(['scan', '--json']);
  result.lspci = sh('lspci -Dnnk').stdout;
  result.scan = {
    code: scan.code,
    stderr: scan.stderr,
    json: scan.code === 0 ? JSON.parse(scan.stdout) : null,
  };

  const capture = agent(['capture', '--out', '/tmp/capture']);
  result.capture = { code: capture.code, stdout: capture.stdout, stderr: capture.stderr };
  // modules.dep is what a real modprobe resolves names with; the agent does not capture it, so
  // it travels beside the capture for the model's modprobe.
  const release = result.uname;
  const tar = sh(`tar -C /tmp/capture -czf - . | base64 -w 0`);
  result.captureTarBase64 = tar.stdout.trim();
  result.modulesDep = read(`/lib/modules/${release}/modules.dep`);

  // Which device is which, from vendor:device (QEMU's e1000e 8086:10d3, e1000 8086:100e,
  // virtio-net 1af4:1000/1041).
  const devs = result.initial.devices;
  const find = (pred) => Object.keys(devs).filter((a) => pred(devs[a]));
  const e1000e = find((d) => d.vendor === '0x8086' && d.device === '0x10d3');
  const e1000 = find((d) => d.vendor === '0x8086' && d.device === '0x100e');
  const virtio = find(
    (d) => d.vendor === '0x1af4' && (d.device === '0x1000' || d.device === '0x1041'),
  );
  result.roles = { e1000e, e1000, virtio };

  const stateArgs = ['--state-dir', STATE_DIR];
  const modDir = `/lib/modules/${release}`;
  /**
   * One agent command with the guest's view around it. `setup` and `teardown` are sysfs writes the
   * host replays through the kernel model; `fault` names how the real kernel is made to fail (the
   * host maps it to the model's equivalent, if it has one).
   */
  const step = (
    name,
    args,
    { setup = [], teardown = [], fault = null, arm, disarm, held = null } = {},
  ) => {
    for (const w of setup) writeFileSync(w.path, w.value);
    arm?.();
    const before = view();
    const run = agent(args);
    const after = view();
    disarm?.();
    for (const w of teardown) writeFileSync(w.path, w.value);
    // `held`: the device a holder had open during the step (the host replays it in the model).
    const holder = held === null ? null : { address: held.address, pid: held.pid, anon: held.anon };
    result.steps.push({
      name,
      ...run,
      setup,
      teardown,
      fault,
      held: holder,
      before,
      after,
      view: view(),
    });
    return run;
  };
  /**
   * `echo ADDRESS > vfio-pci/unbind` in the background while `holder` has the device open: it
   * blocks in vfio-pci's remove() (D state) once the driver link is gone. A `scan --json` runs
   * meanwhile; then the holder exits and the unbind completes. Recorded as a step the model
   * replays (held, with the stuck write), its `after` taken once everything returned.
   */
  const stuckUnbind = async (name, address, holder) => {
    const unbind = { path: '/sys/bus/pci/drivers/vfio-pci/unbind', value: `${address}\n` };
    const before = view();
    const writer = spawn('/bin/sh', ['-c', `echo ${address} > ${unbind.path}`], {
      stdio: 'ignore',
    });
    let written = null;
    const writeDone = new Promise((resolve) =>
      writer.once('exit', (code) => {
        written = { code, at: Date.now() };
        resolve(written);
      }),
    );
    const unlinked = await until(
      () => linkBase(`/sys/bus/pci/devices/${address}/driver`) === null,
      10_000,
    );
    const pendingBeforeScan = written === null;
    // A restore of the device meanwhile, beside the scan: refused, nothing written, no hang.
    const run = agentAsync(['scan', '--json'], 60_000);
    const restoring = agentAsync(['restore', address, '--state-dir', STATE_DIR], 60_000);
    const scan = await run.limited;
    const restore = await restoring.limited;
    const pendingAfterScan = written === null;
    const releasedAt = Date.now();
    await holder.release();
    const done = await within(writeDone, 30_000);
    const finished = scan ?? (await run.exited);
    const after = view();
    result.steps.push({
      name,
      ...finished,
      setup: [],
      teardown: [],
      fault: null,
      held: { address, pid: holder.pid, anon: false },
      stuckWrite: unbind,
      before,
      after,
      view: after,
    });
    result.stuck = {
      address,
      unlinked,
      pendingBeforeScan,
      pendingAfterScan,
      scanHung: scan === null,
      restore: restore ?? { ...(await restoring.exited), hung: true },
      scanMs: finished.ms,
      unbindCode: done?.code ?? null,
      unbindMsAfterRelease: done === null ? null : done.at - releasedAt,
    };
  };
  const vfioPciKo = result.modulesDep
    ?.split('\n')
    .find((l) => /(^|\/)vfio-pci\.ko:/.test(l))
    ?.split(':')[0];

  if (e1000.length === 2 && vfioPciKo !== undefined) {
    // The pair's second member carries a driver_override beforehand, so "exactly the prior state"
    // after a rollback includes a non-empty one.
    const second = `/sys/bus/pci/devices/${e1000[1]}/driver_override`;
    // 1. vfio-pci.ko is gone, so the plan's first step, `modprobe vfio_pci`, fails as on a host
    //    whose kernel package lacks it: nothing may change.
    step('bind-fails-modprobe', ['bind', e1000[0], '--force', ...stateArgs], {
      setup: [{ path: second, value: 'e1000\n' }],
      fault: 'vfio-pci-module-missing',
      arm: () => renameSync(`${modDir}/${vfioPciKo}`, `${modDir}/${vfioPciKo}.away`),
      disarm: () => renameSync(`${modDir}/${vfioPciKo}.away`, `${modDir}/${vfioPciKo}`),
    });
    // 2. Both devices really move to vfio-pci, but /dev/vfio/<group> never shows up for the agent
    //    (an empty tmpfs over /dev/vfio, as in a container whose /dev is not the host's devtmpfs):
    //    the final check fails and the rollback must bring both back, override included.
    step('bind-fails-dev-node', ['bind', e1000[0], '--force', ...stateArgs], {
      teardown: [{ path: second, value: '\n' }],
      fault: 'dev-vfio-hidden',
      arm: () => {
        sh('mkdir -p /dev/vfio && mount -t tmpfs none /dev/vfio');
      },
      disarm: () => {
        sh('umount /dev/vfio');
      },
    });
  }
  // 3. e1000e alone in its group: to vfio, held by a "VM" (restore and rebind refused, nothing
  //    written), let go, and back.
  const enableOf = (address) => read(`/sys/bus/pci/devices/${address}/enable`);
  if (e1000e[0] !== undefined) {
    const address = e1000e[0];
    step('bind-e1000e', ['bind', address, ...stateArgs]);
    result.enableIdle = enableOf(address);
    const holder = await hold(address);
    const held = { address, pid: holder.pid, anon: false };
    result.held = { address, pid: holder.pid, enable: enableOf(address) };
    step('scan-held', ['scan', '--json'], { held });
    step('restore-held', ['restore', address, ...stateArgs], { held });
    step('bind-held', ['bind', address, ...stateArgs], { held });
    await holder.release();
    result.enableReleased = enableOf(address);
    step('scan-released', ['scan', '--json']);
    // 3b. Someone else's unbind stuck behind the holder (not the agent's write): the device's
    //     lock-taking reads block until the holder exits. The agent's scan must neither hang
    //     nor guess; once the holder goes, the unbind completes and a scan sees it unbound.
    await stuckUnbind('scan-stuck', address, await hold(address));
    step('scan-unstuck', ['scan', '--json']);
    step('restore-e1000e', ['restore', address, ...stateArgs]);
  }
  // 4. virtio-net behind its own root port: the PCI driver is virtio-pci. Held only through an
  //    anonymous device fd (group and container closed): in use, by a holder /proc cannot name.
  if (virtio[0] !== undefined) {
    const address = virtio[0];
    step('bind-virtio', ['bind', address, ...stateArgs]);
    const holder = await hold(address, { anon: true });
    step('scan-held-anon', ['scan', '--json'], { held: { address, pid: holder.pid, anon: true } });
    await holder.release();
    step('restore-virtio', ['restore', address, ...stateArgs]);
  }
  // 5. The e1000 pair sharing a group with their bridge: both move, the bridge stays. They need
  //    --force: behind a conventional PCI bridge they have no reset method.
  if (e1000[0] !== undefined) {
    step('bind-e1000-pair', ['bind', e1000[0], '--force', ...stateArgs]);
    step('restore-e1000-pair', ['restore', e1000[0], ...stateArgs]);
  }
  result.final = view();
} catch (error) {
  result.ok = false;
  result.error = error instanceof Error ? `${error.stack}` : String(error);
}
result.ms = Date.now() - started;
process.stdout.write(`${JSON.stringify(result)}\n`);
