// Issue 17 part 4 on the kernel model: a rollback leaves a device that never left its driver alone.
import { mkdtemp, realpath, rm } from 'node:fs/promises';
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
