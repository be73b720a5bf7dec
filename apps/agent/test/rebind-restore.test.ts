// Issue 17 parts 4 and 5 on the kernel model: a rollback leaves a device that never left its
// driver alone, and a restore ends each device on the driver it had (or fails saying so).
import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { KernelIo } from '@vfio-fleet/core';
import {
  buildScenario,
  type KernelFault,
  KernelModel,
  type ScenarioName,
  scenario,
} from '@vfio-fleet/host-fixtures';
import { afterEach, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { createLogger } from '../src/logger';
import { type JobStepEvent, RebindExecutor } from '../src/rebind/executor';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const logger = createLogger('silent');

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  dirs.push(dir);
  return dir;
}

/** Records every kernel write, in order. */
class RecordingIo implements KernelIo {
  writes: Array<[string, string]> = [];
  constructor(private readonly inner: KernelIo) {}
  write(p: string, value: string): Promise<void> {
    this.writes.push([p, value]);
    return this.inner.write(p, value);
  }
  modprobe(module: string): Promise<void> {
    this.writes.push(['modprobe', module]);
    return this.inner.modprobe(module);
  }
}

async function host(name: ScenarioName, faults: KernelFault[] = [], nvidia = true) {
  const root = await tempDir('restore-host-');
  const stateDir = await tempDir('restore-state-');
  const base = scenario(name).modulesAlias ?? '';
  // nvidia's id-table line (out of tree, so not in Debian's file) lets the model bind it back.
  const alias = nvidia ? `${base}alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia\n` : base;
  await buildScenario(root, name, { modulesAlias: alias });
  const model = new KernelModel(root, { faults });
  const io = new RecordingIo(model);
  const executor = new RebindExecutor({
    fs: new HostFs(root),
    io,
    stateDir,
    allowRebind: true,
    logger,
  });
  const events: JobStepEvent[] = [];
  const run = (jobId: string, target: 'vfio' | 'host', address = GPU) =>
    executor.execute({ jobId, address, target, force: false }, (e) => events.push(e));
  return { root, stateDir, model, io, events, run };
}

const summary = (events: JobStepEvent[], phase: 'forward' | 'rollback') =>
  events.filter((e) => e.phase === phase).map((e) => `${e.step.action}:${e.status}`);

describe('rollback touches only what changed', () => {
  it("the host driver's unbind answers EBUSY: the GPU is never unbound or bound again", async () => {
    const h = await host('dual-gpu', [
      { kind: 'write-fails', path: '/sys/bus/pci/drivers/nvidia/unbind', errno: 'EBUSY' },
      // Had the rollback unbound it, nvidia could not take it back: the host would lose its GPU.
      { kind: 'bind-refuses', driver: 'nvidia' },
    ]);
    const outcome = await h.run('busy', 'vfio');

    expect(outcome.status, outcome.reason?.message).toBe('rolled_back');
    expect(outcome.after).toEqual(outcome.before);
    const gpuEvents = h.events.filter((e) => 'address' in e.step && e.step.address === GPU);
    expect(summary(gpuEvents, 'rollback')).toEqual([
      'restore-override:ok',
      'unbind-current:skipped',
      'bind:skipped',
      'verify-driver:ok',
    ]);
    const touched = h.io.writes.filter(([p]) => p.includes(GPU) || p.endsWith('/bind'));
    expect(touched.map(([p]) => p)).toEqual([
      `/sys/bus/pci/devices/${GPU}/driver_override`,
      `/sys/bus/pci/devices/${GPU}/driver_override`,
    ]);
    expect(h.io.writes.filter(([p, v]) => p.endsWith('unbind') && v === GPU)).toEqual([
      ['/sys/bus/pci/drivers/nvidia/unbind', GPU],
    ]);
  });
});

describe('restore returns each device to the driver it had', () => {
  it("the demo's GPU: to vfio records nvidia, restore ends on nvidia and verifies exactly that", async () => {
    const h = await host('dual-gpu');
    expect((await h.run('to-vfio', 'vfio')).status).toBe('succeeded');
    const recorded = JSON.parse(await readFile(path.join(h.stateDir, 'host-drivers.json'), 'utf8'));
    expect(recorded.devices).toEqual([
      { address: GPU, vendorId: '10de', deviceId: '2204', driver: 'nvidia' },
      { address: AUDIO, vendorId: '10de', deviceId: '1aef', driver: 'snd_hda_intel' },
    ]);

    h.events.length = 0;
    const outcome = await h.run('to-host', 'host');
    expect(outcome.status, outcome.reason?.message).toBe('succeeded');
    expect(outcome.after.map((b) => b.driver)).toEqual(['nvidia', 'snd_hda_intel']);
    const expects = h.events.flatMap((e) =>
      e.step.action === 'verify-driver' ? [e.step.expect] : [],
    );
    expect(expects).toEqual([
      { kind: 'driver', driver: 'nvidia' },
      { kind: 'driver', driver: 'snd_hda_intel' },
    ]);
  });

  it('a restore whose driver refuses to bind is rolled back and says why, never succeeded', async () => {
    const h = await host('dual-gpu');
    expect((await h.run('to-vfio', 'vfio')).status).toBe('succeeded');
    h.model.addFault({ kind: 'bind-refuses', driver: 'nvidia' });
    const outcome = await h.run('to-host', 'host');

    expect(outcome.status).toBe('rolled_back');
    expect(outcome.failedStep?.step.action).toBe('verify-driver');
    expect(outcome.reason?.message).toContain(`${GPU} is bound to no driver, expected nvidia`);
    expect(outcome.after).toEqual(outcome.before);
  });

  it('a card swapped in the slot does not inherit the record: the aliases decide', async () => {
    const h = await host('dual-gpu');
    expect((await h.run('to-vfio', 'vfio')).status).toBe('succeeded');
    const file = path.join(h.stateDir, 'host-drivers.json');
    const recorded = JSON.parse(await readFile(file, 'utf8'));
    recorded.devices[0].deviceId = '1b80';
    recorded.devices[0].driver = 'nouveau';
    await writeFile(file, JSON.stringify(recorded));
    h.events.length = 0;
    const outcome = await h.run('to-host', 'host');
    expect(outcome.status, outcome.reason?.message).toBe('succeeded');
    const gpuVerify = h.events.find(
      (e) => e.step.action === 'verify-driver' && e.step.address === GPU,
    );
    // nvidia is loaded (its driver registered), so the kernel's probe would pick it over nouveau.
    expect(gpuVerify?.step).toMatchObject({ expect: { kind: 'driver', driver: 'nvidia' } });
  });

  it('on vfio since boot: the aliases pick the driver, its module is loaded, then verified', async () => {
    const h = await host('vfio-bound', [], false);
    const outcome = await h.run('boot-restore', 'host');
    // Debian's alias file gives the RTX 3090 to nouveau, not loaded on this host.
    expect(h.io.writes[0]).toEqual(['modprobe', 'nouveau']);
    expect(outcome.status, outcome.reason?.message).toBe('succeeded');
    expect(outcome.after.map((b) => [b.address, b.driver])).toEqual([
      [GPU, 'nouveau'],
      [AUDIO, 'snd_hda_intel'],
    ]);
  });

  it('a blacklisted module is not loaded by name: the GPU is expected, and left, on no driver', async () => {
    const h = await host('vfio-bound', [], false);
    await mkdir(path.join(h.root, 'etc/modprobe.d'), { recursive: true });
    await writeFile(path.join(h.root, 'etc/modprobe.d/nouveau.conf'), 'blacklist nouveau\n');
    const outcome = await h.run('boot-restore', 'host');
    // The audio's own driver is still loaded for it; nouveau is not, by name or otherwise.
    expect(h.io.writes.filter(([p]) => p === 'modprobe')).toEqual([['modprobe', 'snd_hda_intel']]);
    expect(outcome.status, outcome.reason?.message).toBe('succeeded');
    const gpuVerify = h.events.find(
      (e) => e.step.action === 'verify-driver' && e.step.address === GPU,
    );
    expect(gpuVerify?.step).toMatchObject({ expect: { kind: 'none' } });
    expect(outcome.after.map((b) => [b.address, b.driver])).toEqual([
      [GPU, null],
      [AUDIO, 'snd_hda_intel'],
    ]);
  });
});
