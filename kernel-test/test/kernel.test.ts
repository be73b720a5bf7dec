/**
 * Issue 4: the agent against a real Linux kernel. beforeAll boots the guest once (a Debian 6.1
 * kernel under QEMU TCG with an emulated Intel IOMMU; see ../README.md) and gets back what the
 * agent did there and what sysfs said after each step. The tests then check the agent against the
 * guest's own view, and replay the very same commands against the kernel model on the guest's
 * capture: every observable (exit status, driver and driver_override of every device,
 * /dev/vfio/<group>, network interfaces) must be the same.
 */
import { spawnSync } from 'node:child_process';
import {
  lstatSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type HostSnapshot, hostSnapshotSchema } from '@vfio-fleet/core';
import { KernelModel } from '@vfio-fleet/host-fixtures';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type Boot,
  bootGuest,
  type GuestStep,
  type SandboxResult,
  type SandboxRun,
  type View,
} from './guest-result';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AGENT_BIN = path.join(REPO, 'apps', 'agent', 'bin', 'vfio-fleet-agent.mjs');
const AGENT_NODE = process.execPath;

/**
 * What the model replays instead of a real fault. null where the model has no equivalent: then
 * the very writes the agent made on the guest (its step log) go through the model instead.
 */
const MODEL_FAULT: Record<NonNullable<GuestStep['fault']>, string[] | null> = {
  // The real modprobe finds no vfio-pci.ko; the model's modprobe fails the same module.
  'vfio-pci-module-missing': ['--simulate-fault', 'modprobe-fails:vfio_pci'],
  // An empty tmpfs over /dev/vfio hides devtmpfs's node from the agent. That is the host's
  // mount table, not the driver core: the model cannot hide a node it created.
  'dev-vfio-hidden': null,
};

/** The sysfs writes and modprobes the agent reported as done (`ok`), in order, rollback included. */
function executedWrites(
  stdout: string,
): Array<{ path: string; value: string } | { module: string }> {
  const done: Array<{ path: string; value: string } | { module: string }> = [];
  for (const line of stdout.split('\n')) {
    const m =
      /^\s+ok\s+(?:rollback )?\d+\. (?:echo (?:(.*?) )?> (\/\S+)|modprobe (\S+))\s+\(\d+ ms\)$/.exec(
        line,
      );
    if (m === null) continue;
    if (m[3] !== undefined) done.push({ module: m[3] });
    // As `echo` writes it: the value and a newline (a bare newline clears driver_override).
    else if (m[2] !== undefined) done.push({ path: m[2], value: `${m[1] ?? ''}\n` });
  }
  return done;
}

/** Per device of a `scan --json`: whether it is in use, by whom, and its status. */
function inUseView(stdout: string): Record<string, unknown> {
  const scan = hostSnapshotSchema.parse(JSON.parse(stdout));
  // A device behind a blocked write is reported unreadable (stuck), by the kernel and the model.
  const unreadable = scan.problems.flatMap((p) =>
    p.device === undefined ? [] : [p.device.address],
  );
  return {
    ...Object.fromEntries(
      scan.devices.map((d) => [d.address, [d.inUse, d.holder, d.readiness.status]]),
    ),
    unreadable,
  };
}

/** What is compared between guest and model after every step. */
interface Observed {
  devices: Record<string, { driver: string | null; override: string | null }>;
  /** IOMMU groups whose /dev/vfio/<group> exists. */
  vfioGroups: string[];
  netdevs: Record<string, string>;
}

function observedOfGuest(view: View): Observed {
  const devices: Observed['devices'] = {};
  for (const [address, d] of Object.entries(view.devices)) {
    devices[address] = { driver: d.driver, override: d.override };
  }
  return {
    devices,
    vfioGroups: view.devVfio.filter((n) => /^\d+$/.test(n)).sort(),
    netdevs: Object.fromEntries(Object.entries(view.netdevs).filter(([name]) => name !== 'lo')),
  };
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

function linkBase(file: string): string | null {
  try {
    return path.basename(readlinkSync(file));
  } catch {
    return null;
  }
}

/** The same observation on the model's tree (the capture the model writes through). */
function observedOfModel(root: string): Observed {
  const devices: Observed['devices'] = {};
  for (const address of list(path.join(root, 'sys/bus/pci/devices'))) {
    const dir = path.join(root, 'sys/bus/pci/devices', address);
    const override = readFileSync(path.join(dir, 'driver_override'), 'utf8').trim();
    devices[address] = {
      driver: linkBase(path.join(dir, 'driver')),
      override: override === '(null)' ? null : override,
    };
  }
  const netdevs: Record<string, string> = {};
  for (const name of list(path.join(root, 'sys/class/net'))) {
    if (name === 'lo') continue;
    let dir: string;
    try {
      dir = realpathSync(path.join(root, 'sys/class/net', name));
    } catch {
      continue;
    }
    const pci = dir
      .split(path.sep)
      .filter((part) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(part))
      .pop();
    if (pci !== undefined) netdevs[name] = pci;
  }
  return {
    devices,
    vfioGroups: list(path.join(root, 'dev/vfio'))
      .filter((n) => /^\d+$/.test(n))
      .sort(),
    netdevs,
  };
}

interface LspciEntry {
  ids: string;
  driver: string | null;
}

/** `lspci -Dnnk`: address, [vendor:device] and "Kernel driver in use" of each function. */
function parseLspci(text: string): Record<string, LspciEntry> {
  const entries: Record<string, LspciEntry> = {};
  let current: LspciEntry | null = null;
  for (const line of text.split('\n')) {
    const head =
      /^([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) .*\[([0-9a-f]{4}:[0-9a-f]{4})\]/.exec(line);
    if (head?.[1] !== undefined && head[2] !== undefined) {
      current = { ids: head[2], driver: null };
      entries[head[1]] = current;
      continue;
    }
    const driver = /^\s+Kernel driver in use: (\S+)/.exec(line);
    if (driver?.[1] !== undefined && current !== null) current.driver = driver[1];
  }
  return entries;
}

function hex(value: string | null): string {
  return (value ?? '').replace(/^0x/, '');
}

let boot: Boot;
let snapshot: HostSnapshot;

beforeAll(() => {
  // The model runs through the agent's bundle (--simulate): build it from the sources under test.
  const build = spawnSync(AGENT_NODE, [path.join(REPO, 'apps', 'agent', 'build.mjs')], {
    encoding: 'utf8',
  });
  if (build.status !== 0) throw new Error(`agent bundle build failed:\n${build.stderr}`);
  boot = bootGuest();
  // Timings for CI's log: the image build (cached or not) and the boot, from boot-guest.sh.
  console.log(
    `${boot.log.trim()}\n[kernel-test] boot + guest scenario: ${(boot.wallMs / 1000).toFixed(1)} s ` +
      `(scenario inside the guest: ${(boot.result.ms / 1000).toFixed(1)} s)`,
  );
  if (!boot.result.ok) {
    throw new Error(
      `the guest scenario failed: ${boot.result.error}\n${boot.console.split('\n').slice(-60).join('\n')}`,
    );
  }
  snapshot = hostSnapshotSchema.parse(boot.result.scan.json);
}, 540_000);

function step(name: string): GuestStep {
  const found = boot.result.steps.find((s) => s.name === name);
  if (found === undefined) {
    throw new Error(`the guest ran no step ${name} (ran: ${boot.result.steps.map((s) => s.name)})`);
  }
  return found;
}

function outputOf(s: GuestStep): string {
  return `${s.name} (exit ${s.code}):\n${s.stdout.split('\n').slice(-25).join('\n')}\n${s.stderr}`;
}

describe('the guest', () => {
  it('booted the Debian kernel with the IOMMU and interrupt remapping on', () => {
    expect(boot.result.uname).toMatch(/^6\.1\.0-\d+-amd64$/);
    expect(boot.result.cmdline).toContain('intel_iommu=on');
    expect(boot.result.dmesgIommu).toMatch(/DMAR: IOMMU enabled/);
    expect(boot.result.dmesgIommu).toMatch(/Enabled IRQ remapping/);
  });

  it('has the emulated NICs in the IOMMU groups the topology promises', () => {
    const { roles, initial } = boot.result;
    expect(roles.e1000e).toHaveLength(1);
    expect(roles.virtio).toHaveLength(1);
    expect(roles.e1000).toHaveLength(2);
    const groupOf = (address: string) => initial.devices[address]?.iommuGroup ?? null;
    const [e1000e] = roles.e1000e;
    const [virtio] = roles.virtio;
    const [first, second] = roles.e1000;
    if (e1000e === undefined || virtio === undefined || first === undefined) {
      throw new Error('roles');
    }
    // e1000e on pcie.0 and virtio behind its own root port: a group of their own.
    expect(initial.groups[groupOf(e1000e) ?? '']).toEqual([e1000e]);
    expect(initial.groups[groupOf(virtio) ?? '']).toEqual([virtio]);
    // The e1000 pair behind one PCI bridge: one group, with the bridge.
    const shared = initial.groups[groupOf(first) ?? ''] ?? [];
    expect(groupOf(second ?? '')).toBe(groupOf(first));
    expect(shared).toHaveLength(3);
    const bridge = shared.find((a) => !roles.e1000.includes(a));
    expect(initial.devices[bridge ?? '']?.class).toMatch(/^0x0604/);
    expect(initial.devices[e1000e]?.driver).toBe('e1000e');
    expect(initial.devices[virtio]?.driver).toBe('virtio-pci');
    expect(initial.devices[first]?.driver).toBe('e1000');
  });
});

describe('scan --json on the real kernel', () => {
  it('exits 0 and reports the IOMMU and interrupt remapping enabled', () => {
    expect(boot.result.scan.code).toBe(0);
    expect(snapshot.host.iommu.enabled).toBe(true);
    expect(snapshot.host.iommu.interruptRemapping).toBe('enabled');
    expect(snapshot.host.iommu.groupCount).toBe(Object.keys(boot.result.initial.groups).length);
    expect(snapshot.host.kernelRelease).toBe(boot.result.uname);
  });

  it('agrees with sysfs on every device: ids, class, driver, override, group', () => {
    const sysfs = boot.result.initial.devices;
    expect(snapshot.devices.map((d) => d.address).sort()).toEqual(Object.keys(sysfs).sort());
    for (const device of snapshot.devices) {
      const real = sysfs[device.address];
      expect(real, device.address).toBeDefined();
      expect(device.vendorId, device.address).toBe(hex(real?.vendor ?? null));
      expect(device.deviceId, device.address).toBe(hex(real?.device ?? null));
      expect(device.classCode, device.address).toBe(hex(real?.class ?? null));
      expect(device.driver, device.address).toBe(real?.driver ?? null);
      expect(device.driverOverride, device.address).toBe(real?.override ?? null);
      expect(device.iommuGroup, device.address).toBe(
        real?.iommuGroup === null || real?.iommuGroup === undefined
          ? null
          : Number(real.iommuGroup),
      );
    }
  });

  it('agrees with /sys/kernel/iommu_groups on every group', () => {
    const groups = Object.fromEntries(
      snapshot.groups.map((g) => [String(g.id), [...g.devices].sort()]),
    );
    expect(groups).toEqual(boot.result.initial.groups);
  });

  it('agrees with lspci -nnk on every function: ids and driver in use', () => {
    const lspci = parseLspci(boot.result.lspci);
    expect(Object.keys(lspci).sort()).toEqual(snapshot.devices.map((d) => d.address).sort());
    for (const device of snapshot.devices) {
      expect(lspci[device.address]?.ids, device.address).toBe(
        `${device.vendorId}:${device.deviceId}`,
      );
      expect(lspci[device.address]?.driver ?? null, device.address).toBe(device.driver);
    }
  });

  it('reads the NICs as passable and the bridges as blocked', () => {
    const status = (address: string | undefined) =>
      snapshot.devices.find((d) => d.address === address)?.readiness.status;
    const { roles } = boot.result;
    expect(status(roles.e1000e[0])).toBe('ready');
    expect(status(roles.virtio[0])).toBe('ready');
    for (const address of roles.e1000) expect(status(address)).toBe('ready');
    for (const device of snapshot.devices.filter((d) => d.classCode.startsWith('0604'))) {
      expect(device.readiness.status, device.address).toBe('blocked');
    }
  });
});

describe('bind and restore on the real kernel', () => {
  it('bind moves the e1000e to vfio-pci and /dev/vfio/<group> appears; its netdev goes', () => {
    const s = step('bind-e1000e');
    const address = boot.result.roles.e1000e[0] ?? '';
    const group = s.before.devices[address]?.iommuGroup ?? '';
    expect(s.code, outputOf(s)).toBe(0);
    expect(s.after.devices[address]?.driver).toBe('vfio-pci');
    expect(s.after.devices[address]?.override).toBe('vfio-pci');
    expect(s.after.devVfio).toContain(group);
    expect(Object.values(s.after.netdevs)).not.toContain(address);
  });

  it('restore gives it back to e1000e, clears the override, and its interface returns', () => {
    const s = step('restore-e1000e');
    const address = boot.result.roles.e1000e[0] ?? '';
    const group = s.before.devices[address]?.iommuGroup ?? '';
    expect(s.code, outputOf(s)).toBe(0);
    expect(s.after.devices[address]?.driver).toBe('e1000e');
    expect(s.after.devices[address]?.override).toBeNull();
    expect(s.after.devVfio).not.toContain(group);
    expect(Object.values(s.after.netdevs)).toContain(address);
  });

  it('virtio-net: vfio-pci and back to virtio-pci (virtio_net binds one level below)', () => {
    const address = boot.result.roles.virtio[0] ?? '';
    const bind = step('bind-virtio');
    expect(bind.code, outputOf(bind)).toBe(0);
    expect(bind.after.devices[address]?.driver).toBe('vfio-pci');
    expect(Object.values(bind.after.netdevs)).not.toContain(address);
    const restore = step('restore-virtio');
    expect(restore.code, outputOf(restore)).toBe(0);
    expect(restore.after.devices[address]?.driver).toBe('virtio-pci');
    expect(Object.values(restore.after.netdevs)).toContain(address);
  });

  it('the shared group moves whole: both e1000 to vfio-pci, the bridge stays; and back', () => {
    const [first, second] = boot.result.roles.e1000;
    const bind = step('bind-e1000-pair');
    const group = bind.before.devices[first ?? '']?.iommuGroup ?? '';
    const bridge = (boot.result.initial.groups[group] ?? []).find(
      (a) => !boot.result.roles.e1000.includes(a),
    );
    expect(bind.code, outputOf(bind)).toBe(0);
    expect(bind.after.devices[first ?? '']?.driver).toBe('vfio-pci');
    expect(bind.after.devices[second ?? '']?.driver).toBe('vfio-pci');
    expect(bind.after.devices[bridge ?? '']).toEqual(bind.before.devices[bridge ?? '']);
    expect(bind.after.devVfio).toContain(group);
    const restore = step('restore-e1000-pair');
    expect(restore.code, outputOf(restore)).toBe(0);
    expect(restore.after.devices[first ?? '']?.driver).toBe('e1000');
    expect(restore.after.devices[second ?? '']?.driver).toBe('e1000');
    expect(restore.after.netdevs).toEqual(boot.result.initial.netdevs);
  });

  for (const name of ['bind-fails-modprobe', 'bind-fails-dev-node']) {
    it(`${name}: exit 4 and every device exactly as before (drivers and overrides)`, () => {
      const s = step(name);
      expect(s.code, outputOf(s)).toBe(4);
      expect(observedOfGuest(s.after).devices).toEqual(observedOfGuest(s.before).devices);
      // Every NIC has an interface again. Not necessarily under its old name: without udev the
      // kernel hands out the lowest free eth%d, and a rollback re-registers in reverse order
      // (bind-fails-dev-node comes back with eth1 and eth2 swapped; see the README).
      expect(Object.values(s.after.netdevs).sort()).toEqual(Object.values(s.before.netdevs).sort());
      // The prior state had a non-empty override on the pair's second member.
      const second = boot.result.roles.e1000[1] ?? '';
      expect(s.before.devices[second]?.override).toBe('e1000');
    });
  }

  it('bind-fails-dev-node really moved both devices before it rolled back', () => {
    const s = step('bind-fails-dev-node');
    expect(s.stdout).toMatch(/ok\s+\d+\. echo \S+ > \/sys\/bus\/pci\/drivers_probe/);
    expect(`${s.stdout}${s.stderr}`).toMatch(/did not appear/);
    expect(s.stdout).toMatch(/rollback/);
  });

  it('ends with every device as it started', () => {
    expect(observedOfGuest(boot.result.final)).toEqual(observedOfGuest(boot.result.initial));
  });
});

describe('a device a VM holds, on the real kernel (guest/vfio-hold.c)', () => {
  function scanOf(name: string): HostSnapshot {
    const s = step(name);
    expect(s.code, outputOf(s)).toBe(0);
    return hostSnapshotSchema.parse(JSON.parse(s.stdout));
  }
  const deviceIn = (scan: HostSnapshot, address: string) =>
    scan.devices.find((d) => d.address === address);

  it('the helper is a real user: vfio_iommu_type1 loaded (kmod softdep), enable reads 1 while held', () => {
    expect(boot.result.enableIdle).toBe('0');
    expect(boot.result.held.enable).toBe('1');
    expect(boot.result.enableReleased).toBe('0');
  });

  it('scan reports it in use by the helper, naming the VM from its -name guest=', () => {
    const address = boot.result.roles.e1000e[0] ?? '';
    const device = deviceIn(scanOf('scan-held'), address);
    expect(device?.inUse).toBe(true);
    expect(device?.holder).toEqual({
      pid: boot.result.held.pid,
      command: 'vfio-hold',
      vm: 'kt-vm',
    });
    expect(device?.readiness.status).toBe('in-use');
  });

  it('restore is refused with nothing written; a rebind is already done', () => {
    const address = boot.result.roles.e1000e[0] ?? '';
    const restore = step('restore-held');
    expect(restore.code, outputOf(restore)).toBe(3);
    expect(`${restore.stdout}${restore.stderr}`).toMatch(/in use/);
    expect(restore.after.devices).toEqual(restore.before.devices);
    expect(restore.after.devices[address]?.driver).toBe('vfio-pci');
    const bind = step('bind-held');
    expect(bind.code, outputOf(bind)).toBe(0);
    expect(bind.after.devices).toEqual(bind.before.devices);
  });

  it('a holder seen only through an anonymous device fd is in use, by an unknown process', () => {
    const address = boot.result.roles.virtio[0] ?? '';
    const device = deviceIn(scanOf('scan-held-anon'), address);
    expect(device?.inUse).toBe(true);
    expect(device?.holder).toBeNull();
  });

  it('once the holder exits the device is free again, and restore works', () => {
    const address = boot.result.roles.e1000e[0] ?? '';
    const device = deviceIn(scanOf('scan-released'), address);
    expect(device?.inUse).toBe(false);
    expect(device?.readiness.status).toBe('bound');
    expect(step('restore-e1000e').after.devices[address]?.driver).toBe('e1000e');
  });
});

/**
 * Someone else's `echo ADDRESS > vfio-pci/unbind` blocked behind vfio-hold (guest/scenario.mjs,
 * scan-stuck): while it is pending the device's lock-taking reads block, and the agent's scan must
 * report the device rather than block with them.
 */
describe('a write stuck behind the holder, on the real kernel', () => {
  function stuck(): NonNullable<Boot['result']['stuck']> {
    const s = boot.result.stuck;
    if (s === null) throw new Error('the guest ran no scan-stuck');
    return s;
  }
  function scanOf(name: string): HostSnapshot {
    const s = step(name);
    expect(s.code, outputOf(s)).toBe(0);
    return hostSnapshotSchema.parse(JSON.parse(s.stdout));
  }

  it('the unbind blocked in remove(): the driver link went at once, the write did not return', () => {
    const s = stuck();
    expect(s.unlinked).toBe(true);
    expect(s.pendingBeforeScan).toBe(true);
    expect(s.pendingAfterScan).toBe(true);
  });

  it('scan ends on its own meanwhile and reports every other device', () => {
    const s = stuck();
    const scan = step('scan-stuck');
    console.log(
      `[kernel-test] scan with the unbind stuck: ${s.scanMs} ms (scan-released: ` +
        `${step('scan-released').ms} ms); the unbind returned ${s.unbindMsAfterRelease} ms ` +
        'after the holder was let go',
    );
    expect(s.scanHung, outputOf(scan)).toBe(false);
    const others = Object.keys(scan.before.devices).filter((a) => a !== s.address);
    expect(
      scanOf('scan-stuck')
        .devices.map((d) => d.address)
        .sort(),
    ).toEqual(others.sort());
  });

  it('the device is reported stuck in the kernel, in its group, not guessed at', () => {
    const s = stuck();
    const scan = scanOf('scan-stuck');
    const problem = scan.problems.find((p) => p.device?.address === s.address);
    expect(problem?.message).toMatch(
      /stuck in the kernel: a read of \/sys\/bus\/pci\/devices\/\S+\/driver_override/,
    );
    const group = step('scan-stuck').before.devices[s.address]?.iommuGroup;
    expect(problem?.device?.iommuGroup).toBe(Number(group));
  });

  it('a restore of it meanwhile is refused at once, with nothing written', () => {
    const { restore } = stuck();
    const output = `${restore.stdout}${restore.stderr}`;
    expect(restore.hung, output).toBe(false);
    expect(restore.code, output).toBe(3);
    expect(output).toMatch(/nothing written: \S+ is stuck in the kernel/);
    // Its override is still vfio-pci after the unbind completed (checked below): nothing cleared it.
  });

  it('once the holder exits the unbind completes, and a scan converges: no driver, not in use', () => {
    const s = stuck();
    expect(s.unbindCode).toBe(0);
    expect(step('scan-stuck').after.devices[s.address]?.driver).toBeNull();
    const device = scanOf('scan-unstuck').devices.find((d) => d.address === s.address);
    expect(device).toMatchObject({
      driver: null,
      driverOverride: 'vfio-pci',
      inUse: false,
      holder: null,
    });
  });
});

/**
 * Starts the step's stuck write in the model and waits until it blocks as the kernel's did (the
 * driver link gone, the write pending). `whilePending` lists what differs from the guest.
 */
async function startStuckWrite(model: KernelModel, root: string, s: GuestStep) {
  const write = s.stuckWrite;
  const address = s.held?.address;
  if (write === null || address === undefined) throw new Error(`${s.name}: no holder`);
  let settled = false;
  const done = model.write(write.path, write.value).finally(() => {
    settled = true;
  });
  const driver = path.join(root, 'sys/bus/pci/devices', address, 'driver');
  for (let i = 0; i < 200 && linkBase(driver) !== null && !settled; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const unlinked = linkBase(driver) === null;
  // The model takes the device lock (its locked attributes become FIFOs) just after the link
  // goes; the agent's scan runs under spawnSync, which would stop that half-way.
  const override = path.join(root, 'sys/bus/pci/devices', address, 'driver_override');
  for (let i = 0; i < 200 && !settled && !lstatSync(override).isFIFO(); i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return {
    done,
    whilePending(step: GuestStep): string[] {
      const found: string[] = [];
      if (settled) found.push(`${step.name}: the model's unbind returned while the holder held`);
      if (unlinked !== boot.result.stuck?.unlinked) {
        found.push(`${step.name}: driver link gone while blocked: model ${unlinked}`);
      }
      return found;
    },
  };
}

describe('the kernel model on the guest’s capture', () => {
  it('gives the same observable results as the real kernel, step by step', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'vfio-fleet-kernel-model-'));
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'vfio-fleet-kernel-state-'));
    const untar = spawnSync('tar', ['-C', root, '-xzf', '-'], {
      input: Buffer.from(boot.result.captureTarBase64, 'base64'),
    });
    expect(untar.status, `${untar.stderr}`).toBe(0);
    expect(observedOfModel(root)).toEqual(observedOfGuest(boot.result.initial));

    const differences: string[] = [];
    let replayed = 0;
    for (const s of boot.result.steps) {
      const fault = s.fault === null ? [] : MODEL_FAULT[s.fault];
      const model = new KernelModel(root);
      for (const w of s.setup) await model.write(w.path, w.value);
      // The guest's holder, held in the model the same way (same pid, comm and argv[0] and -name).
      const release =
        s.held === null
          ? null
          : await model.holdDevice(s.held.address, {
              pid: s.held.pid,
              comm: 'vfio-hold',
              cmdline: ['qemu-system-x86_64', '-name', 'guest=kt-vm,debug-threads=on'],
              deviceFdOnly: s.held.anon,
            });
      // The guest's own unbind blocked behind the holder: the same write into the model, left
      // pending while the agent scans.
      const stuck = s.stuckWrite === null ? null : await startStuckWrite(model, root, s);
      let status: number | null = s.code;
      let output = '';
      if (s.held !== null || s.args[0] === 'scan') {
        // A held device's verdicts and a scan's in-use view come from the agent on the model.
        const args = s.args.map((a, i) => (s.args[i - 1] === '--state-dir' ? stateDir : a));
        const simulate = s.args[0] === 'scan' ? [] : ['--simulate'];
        const run = spawnSync(AGENT_NODE, [AGENT_BIN, ...args, '--root', root, ...simulate], {
          encoding: 'utf8',
          env: { ...process.env, NO_COLOR: '1' },
        });
        status = run.status;
        output = `${run.stdout.split('\n').slice(-12).join('\n')}\n${run.stderr}`;
        if (s.args[0] === 'scan' && run.status === 0 && s.code === 0) {
          const a = inUseView(run.stdout);
          const b = inUseView(s.stdout);
          const [ja, jb] = [JSON.stringify(a), JSON.stringify(b)];
          if (ja !== jb) differences.push(`${s.name}: in use\n  model:  ${ja}\n  kernel: ${jb}`);
        }
        replayed += 1;
      } else if (fault === null) {
        // No model fault for it: the same writes, straight into the model.
        for (const op of executedWrites(s.stdout)) {
          if ('module' in op) await model.modprobe(op.module);
          else await model.write(op.path, op.value);
        }
      } else {
        const args = s.args.map((a, i) => (s.args[i - 1] === '--state-dir' ? stateDir : a));
        const run = spawnSync(
          AGENT_NODE,
          [AGENT_BIN, ...args, '--root', root, '--simulate', ...fault],
          {
            encoding: 'utf8',
            env: { ...process.env, NO_COLOR: '1' },
          },
        );
        status = run.status;
        output = `${run.stdout.split('\n').slice(-12).join('\n')}\n${run.stderr}`;
        replayed += 1;
      }
      if (stuck !== null) {
        differences.push(...stuck.whilePending(s));
        // The guest let the holder go before its `after`: the unbind then completes.
        await release?.();
        await stuck.done;
      }
      const got = observedOfModel(root);
      await release?.();
      for (const w of s.teardown) await model.write(w.path, w.value);
      const want = observedOfGuest(s.after);
      if (status !== s.code) {
        differences.push(
          `${s.name}: exit ${status} in the model, ${s.code} on the kernel\n${output}`,
        );
      }
      for (const [key, label] of [
        ['devices', 'drivers/overrides'],
        ['vfioGroups', '/dev/vfio groups'],
        ['netdevs', 'interfaces'],
      ] as const) {
        const a = JSON.stringify(got[key]);
        const b = JSON.stringify(want[key]);
        if (a !== b) differences.push(`${s.name}: ${label}\n  model:  ${a}\n  kernel: ${b}`);
      }
      // The next step starts from the guest's state after teardown: so must the model.
      const after = observedOfModel(root);
      if (JSON.stringify(after.devices) !== JSON.stringify(observedOfGuest(s.view).devices)) {
        differences.push(`${s.name}: state after teardown differs`);
      }
    }
    rmSync(root, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
    expect(replayed).toBeGreaterThanOrEqual(6);
    expect(differences, differences.join('\n\n')).toEqual([]);
  });
});

/**
 * The packaged unit's sandbox on the same kernel, systemd 252 as PID 1 (guest/sandbox.mjs): each
 * run is a oneshot unit with the packaged [Service] options, ExecStart replaced by the agent.
 */
describe('the packaged systemd unit’s sandbox on the real kernel', () => {
  function sandbox(): SandboxResult {
    if (typeof boot.sandbox === 'string') throw new Error(boot.sandbox);
    if (!boot.sandbox.ok) throw new Error(`the sandbox part failed: ${boot.sandbox.error}`);
    return boot.sandbox;
  }

  function run(name: string): SandboxRun {
    const found = sandbox().runs.find((r) => r.name === name);
    if (found === undefined) {
      throw new Error(`no sandbox run ${name} (ran: ${sandbox().runs.map((r) => r.name)})`);
    }
    return found;
  }

  function outputOfRun(r: SandboxRun): string {
    return (
      `${r.name} (systemd Result=${r.result}, exit ${r.status}, systemctl start ${r.start.code}` +
      ` ${r.start.stderr.trim()}):\n${r.stdout.split('\n').slice(-25).join('\n')}\n${r.stderr}` +
      `\n--- unit ---\n${r.unit}`
    );
  }

  /** The device's driver/override and the groups with a /dev/vfio node: what a run may change. */
  function unchanged(r: SandboxRun): void {
    expect(observedOfGuest(r.after).devices, outputOfRun(r)).toEqual(
      observedOfGuest(r.before).devices,
    );
    expect(observedOfGuest(r.after).vfioGroups).toEqual(observedOfGuest(r.before).vfioGroups);
  }

  it('ran under systemd 252 as PID 1, each run as a unit with the packaged options', () => {
    const s = sandbox();
    expect(s.pid1).toBe('systemd');
    expect(s.systemd).toMatch(/^systemd 25\d/);
    const packaged = run('packaged-bind').unit;
    for (const option of [
      'ProtectSystem=strict',
      'ProtectKernelTunables=yes',
      'ReadWritePaths=/sys/bus/pci /sys/devices',
      'CapabilityBoundingSet=CAP_SYS_MODULE',
      'SystemCallFilter=@system-service @module',
      'NoNewPrivileges=yes',
      'PrivateTmp=yes',
      'StateDirectory=vfio-fleet',
    ]) {
      expect(packaged.split('\n'), option).toContain(option);
    }
  });

  it('the packaged sandbox lets a bind through: modprobe, sysfs writes, /dev/vfio check', () => {
    const r = run('packaged-bind');
    const address = sandbox().device ?? '';
    const group = r.before.devices[address]?.iommuGroup ?? '';
    expect(r.status, outputOfRun(r)).toBe(0);
    expect(r.result).toBe('success');
    // vfio_pci was unloaded before: the agent loaded it from inside the sandbox.
    expect(r.vfioLoadedBefore).toBe(false);
    expect(r.vfioLoadedAfter).toBe(true);
    expect(r.after.devices[address]?.driver).toBe('vfio-pci');
    expect(r.after.devices[address]?.override).toBe('vfio-pci');
    expect(r.after.devVfio).toContain(group);
  });

  it('and a restore: the host driver back, the override cleared', () => {
    const r = run('packaged-restore');
    const address = sandbox().device ?? '';
    expect(r.status, outputOfRun(r)).toBe(0);
    expect(r.after.devices[address]?.driver).toBe('e1000e');
    expect(r.after.devices[address]?.override).toBeNull();
    expect(Object.values(r.after.netdevs)).toContain(address);
  });

  it('ProtectKernelModules=yes breaks it: modprobe fails, nothing changes', () => {
    const r = run('protect-kernel-modules');
    expect(r.status, outputOfRun(r)).toBe(4);
    expect(r.vfioLoadedBefore).toBe(false);
    expect(r.vfioLoadedAfter).toBe(false);
    expect(`${r.stdout}${r.stderr}`).toMatch(/modprobe vfio_pci/);
    unchanged(r);
  });

  for (const name of ['rw-bus-pci-only', 'no-rw-paths']) {
    it(`${name}: a read-only sysfs write fails (EROFS), nothing changes`, () => {
      const r = run(name);
      expect(r.status, outputOfRun(r)).toBe(4);
      // Named as such, with the unit options that fix it.
      expect(`${r.stdout}${r.stderr}`).toMatch(
        /EROFS: .*ReadWritePaths=\/sys\/bus\/pci \/sys\/devices/,
      );
      unchanged(r);
    });
  }

  it('the packaged unit runs the daemon: active, dials the server, stops cleanly on SIGTERM', () => {
    const d = sandbox().daemon;
    if (d === undefined) throw new Error('the guest did not run the daemon part');
    const context = `${JSON.stringify({ ...d, log: undefined })}\n${d.log.slice(-3000)}`;
    expect(d.start.code, context).toBe(0);
    expect(d.running.ActiveState, context).toBe('active');
    expect(d.running.NRestarts, context).toBe('0');
    // The token from agent.env reached the agent through its environment, not its arguments.
    expect(d.cmdline).toMatch(/vfio-fleet-agent\.mjs run --server http:\/\/127\.0\.0\.1:9 --label/);
    expect(d.tokenInCmdline).toBe(false);
    expect(d.environHasToken).toBe(true);
    // StateDirectory=vfio-fleet with StateDirectoryMode=0700.
    expect(d.stateDirMode).toBe('700');
    // It got as far as connect(2): the socket itself was allowed (RestrictAddressFamilies=).
    expect(d.log).toMatch(/"msg":"connecting"/);
    expect(d.log).toMatch(/ECONNREFUSED/);
    expect(d.log).not.toMatch(/EAFNOSUPPORT|EPERM|Bad system call/);
    expect(d.stop.code, context).toBe(0);
    expect(d.stopped.Result, context).toBe('success');
    expect(d.log).toMatch(/"msg":"agent stopped"/);
  });

  it('PrivateDevices=yes breaks it: the device moves, /dev/vfio/<group> is not seen, rollback', () => {
    const r = run('private-devices');
    expect(r.status, outputOfRun(r)).toBe(4);
    expect(`${r.stdout}${r.stderr}`).toMatch(/did not appear/);
    expect(r.stdout).toMatch(/rollback/);
    unchanged(r);
  });
});
