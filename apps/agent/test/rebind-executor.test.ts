// The rebind executor against the kernel model on real fixture trees (no fs mocks): success,
// restore, rollback after every injected fault, idempotent job ids, refusals and group locking.
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { KernelIo } from '@vfio-fleet/core';
import {
  buildScenario,
  type KernelFault,
  KernelModel,
  type KernelModelOptions,
  type ScenarioName,
  scenario,
} from '@vfio-fleet/host-fixtures';
import { afterEach, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';
import { createLogger } from '../src/logger';
import { persistBindings } from '../src/rebind/bindings-file';
import {
  type ExecutorDeps,
  type JobOutcome,
  type JobStepEvent,
  RebindExecutor,
} from '../src/rebind/executor';
import { reapplyPersistedBindings } from '../src/rebind/persist';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const ROOT_NVME = '0000:4b:00.0';
const MLX5_PF = '0000:41:00.0';
const logger = createLogger('silent');

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  tempDirs.push(dir);
  return dir;
}

/**
 * The scenario's modules.alias plus nvidia's real id-table line. Debian's kernel tree lacks it
 * (nvidia is out of tree), but a host running nvidia has it from DKMS; without it the kernel model,
 * like the kernel, cannot bind nvidia back to the GPU.
 */
function withNvidia(name: ScenarioName): string | null {
  const base = scenario(name).modulesAlias;
  return base === null ? null : `${base}alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia\n`;
}

/** Counts every write and modprobe that reaches the kernel (model). */
class CountingIo implements KernelIo {
  writes: Array<[string, string]> = [];
  modprobes: string[] = [];
  constructor(
    private readonly inner: KernelIo,
    private readonly delayMs = 0,
  ) {}
  async write(p: string, value: string): Promise<void> {
    this.writes.push([p, value]);
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
    return this.inner.write(p, value);
  }
  async modprobe(module: string): Promise<void> {
    this.modprobes.push(module);
    return this.inner.modprobe(module);
  }
  get count(): number {
    return this.writes.length + this.modprobes.length;
  }
}

interface Host {
  root: string;
  stateDir: string;
  fs: HostFs;
  io: CountingIo;
  model: KernelModel;
  executor: RebindExecutor;
  deps: ExecutorDeps;
}

async function host(
  name: ScenarioName = 'dual-gpu',
  opts: {
    faults?: KernelFault[];
    model?: KernelModelOptions;
    deps?: Partial<ExecutorDeps>;
    delayMs?: number;
  } = {},
): Promise<Host> {
  const root = await tempDir('rebind-host-');
  const stateDir = await tempDir('rebind-state-');
  await buildScenario(root, name, { modulesAlias: withNvidia(name) });
  const fs = new HostFs(root);
  const model = new KernelModel(root, { ...opts.model, faults: opts.faults ?? [] });
  const io = new CountingIo(model, opts.delayMs);
  const deps: ExecutorDeps = { fs, io, stateDir, allowRebind: true, logger, ...opts.deps };
  return { root, stateDir, fs, io, model, executor: new RebindExecutor(deps), deps };
}

/** driver + driver_override of every PCI device, as collectHost reads them. */
async function bindings(fs: HostFs): Promise<Record<string, [string | null, string | null]>> {
  const snapshot = await collectHost(fs);
  return Object.fromEntries(
    snapshot.devices.map((d) => [
      d.address,
      [d.driver, d.driverOverride] as [string | null, string | null],
    ]),
  );
}

function collect(): { events: JobStepEvent[]; onStep: (e: JobStepEvent) => void } {
  const events: JobStepEvent[] = [];
  return { events, onStep: (e) => events.push(e) };
}

const job = (jobId: string, address = GPU, target: 'vfio' | 'host' = 'vfio', force = false) => ({
  jobId,
  address,
  target,
  force,
});

describe('RebindExecutor: success and restore', () => {
  it('moves GPU and audio to vfio-pci, verified, with /dev/vfio/<group> and every step reported', async () => {
    const h = await host();
    const { events, onStep } = collect();
    const outcome = await h.executor.execute(job('job-1'), onStep);

    expect(outcome.status).toBe('succeeded');
    expect(outcome.reason).toBeNull();
    expect(outcome.failedStep).toBeNull();
    expect(outcome.before).toEqual([
      { address: GPU, driver: 'nvidia', driverOverride: null },
      { address: AUDIO, driver: 'snd_hda_intel', driverOverride: null },
    ]);
    expect(outcome.after).toEqual([
      { address: GPU, driver: 'vfio-pci', driverOverride: 'vfio-pci' },
      { address: AUDIO, driver: 'vfio-pci', driverOverride: 'vfio-pci' },
    ]);
    expect(existsSync(path.join(h.root, 'dev/vfio/21'))).toBe(true);
    const after = await bindings(h.fs);
    expect(after[GPU]).toEqual(['vfio-pci', 'vfio-pci']);
    expect(after[AUDIO]).toEqual(['vfio-pci', 'vfio-pci']);

    // modprobe, then per device: override, unbind, probe, verify.
    expect(events.map((e) => `${e.phase}:${e.index}:${e.step.action}:${e.status}`)).toEqual([
      'forward:0:modprobe:ok',
      'forward:1:set-override:ok',
      'forward:2:unbind:ok',
      'forward:3:probe:ok',
      'forward:4:verify-driver:ok',
      'forward:5:set-override:ok',
      'forward:6:unbind:ok',
      'forward:7:probe:ok',
      'forward:8:verify-driver:ok',
    ]);
    for (const e of events) {
      expect(e.jobId).toBe('job-1');
      expect(e.durationMs).toBeGreaterThanOrEqual(0);
      expect(Number.isNaN(Date.parse(e.startedAt))).toBe(false);
      expect(e.error).toBeNull();
    }

    // Stored atomically with mode 0600, no temp file or running marker left behind.
    const file = path.join(h.stateDir, 'jobs/job-1.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(outcome);
    expect(await readdir(path.join(h.stateDir, 'jobs'))).toEqual(['job-1.json']);
  });

  it('restores the group to its host drivers', async () => {
    const h = await host();
    const before = await bindings(h.fs);
    expect((await h.executor.execute(job('to-vfio'))).status).toBe('succeeded');
    const { events, onStep } = collect();
    const outcome = await h.executor.execute(job('to-host', AUDIO, 'host'), onStep);

    expect(outcome.status).toBe('succeeded');
    expect(outcome.after).toEqual([
      { address: GPU, driver: 'nvidia', driverOverride: null },
      { address: AUDIO, driver: 'snd_hda_intel', driverOverride: null },
    ]);
    expect(await bindings(h.fs)).toEqual(before);
    expect(existsSync(path.join(h.root, 'dev/vfio/21'))).toBe(false);
    expect(events.every((e) => e.phase === 'forward' && e.status === 'ok')).toBe(true);
  });

  it('a group already on vfio succeeds without a single write', async () => {
    const h = await host('vfio-bound');
    const outcome = await h.executor.execute(job('noop'));
    expect(outcome.status).toBe('succeeded');
    expect(h.io.count).toBe(0);
  });

  it('nothing happens at construction: an executor over a host changes no file', async () => {
    const h = await host();
    const before = await bindings(h.fs);
    new RebindExecutor(h.deps);
    expect(h.io.count).toBe(0);
    expect(await bindings(h.fs)).toEqual(before);
    expect(existsSync(path.join(h.stateDir, 'jobs'))).toBe(false);
  });
});

describe('RebindExecutor: rollback after each injected fault leaves the group exactly as before', () => {
  const cases: Array<{
    name: string;
    faults: KernelFault[];
    model?: KernelModelOptions;
    stepTimeoutMs?: number;
    /** The fault goes away once it has failed a step (a transient hang, not a dead device). */
    transient?: boolean;
    failedAction: string;
    failedIndex: number;
    errno: string;
    code: string;
  }> = [
    {
      name: "write-fails on the second device's unbind",
      faults: [
        { kind: 'write-fails', path: '/sys/bus/pci/drivers/snd_hda_intel/unbind', errno: 'EBUSY' },
      ],
      failedAction: 'unbind',
      failedIndex: 6,
      errno: 'EBUSY',
      code: 'step-failed',
    },
    {
      name: 'bind-refuses for vfio-pci',
      faults: [{ kind: 'bind-refuses', driver: 'vfio-pci' }],
      // drivers_probe succeeds with the device left unbound: the verify step catches it.
      failedAction: 'verify-driver',
      failedIndex: 4,
      errno: 'EVERIFY',
      code: 'step-failed',
    },
    {
      name: 'probe-hangs (past the step timeout)',
      faults: [{ kind: 'probe-hangs', address: GPU }],
      // Scaled for a loaded CI machine: an ordinary step must fit well inside the step timeout,
      // the hang must outlast it and end within the executor's one extra timeout of grace.
      model: { probeHangMs: 3_000 },
      stepTimeoutMs: 2_000,
      transient: true,
      failedAction: 'probe',
      failedIndex: 3,
      errno: 'ETIMEDOUT',
      code: 'step-timeout',
    },
    {
      name: 'modprobe-fails',
      faults: [{ kind: 'modprobe-fails', module: 'vfio_pci' }],
      failedAction: 'modprobe',
      failedIndex: 0,
      errno: 'EIO',
      code: 'step-failed',
    },
  ];

  for (const c of cases) {
    it(c.name, async () => {
      const h = await host('dual-gpu', {
        faults: c.faults,
        ...(c.model === undefined ? {} : { model: c.model }),
        deps: c.stepTimeoutMs === undefined ? {} : { stepTimeoutMs: c.stepTimeoutMs },
      });
      const before = await bindings(h.fs);
      const { events, onStep } = collect();
      const outcome = await h.executor.execute(job('faulty'), (e) => {
        if (c.transient === true && e.status === 'failed') h.model.clearFaults();
        onStep(e);
      });

      expect(outcome.status, JSON.stringify(outcome.reason)).toBe('rolled_back');
      expect(outcome.reason?.code).toBe(c.code);
      expect(outcome.failedStep?.phase).toBe('forward');
      expect(outcome.failedStep?.index).toBe(c.failedIndex);
      expect(outcome.failedStep?.step.action).toBe(c.failedAction);
      expect(outcome.kernelError?.errno).toBe(c.errno);
      expect(outcome.after).toEqual(outcome.before);
      // Every device of the host, not only the group: driver and driver_override as before.
      expect(await bindings(h.fs)).toEqual(before);
      expect(existsSync(path.join(h.root, 'dev/vfio/21'))).toBe(false);

      const failed = events.filter((e) => e.phase === 'forward' && e.status === 'failed');
      expect(failed).toHaveLength(1);
      expect(failed[0]?.error?.errno).toBe(c.errno);
      const rollback = events.filter((e) => e.phase === 'rollback');
      expect(rollback.length).toBeGreaterThan(0);
      expect(
        rollback.filter((e) => e.status === 'failed').map((e) => [e.index, e.step.action, e.error]),
      ).toEqual([]);
    });
  }

  it('a group on vfio without its /dev/vfio node is rolled back', async () => {
    const h = await host('dual-gpu', { deps: { stepTimeoutMs: 2_000 } });
    // The kernel model creates the node; a host where it never appears is simulated by removing it.
    const io: KernelIo = {
      write: async (p, value) => {
        await h.io.write(p, value);
        await rm(path.join(h.root, 'dev/vfio/21'), { force: true });
      },
      modprobe: (module) => h.io.modprobe(module),
    };
    const before = await bindings(h.fs);
    const outcome = await new RebindExecutor({ ...h.deps, io }).execute(job('no-node'));
    expect(outcome.status).toBe('rolled_back');
    expect(outcome.reason?.code).toBe('vfio-node-missing');
    expect(outcome.failedStep).toBeNull();
    expect(outcome.kernelError?.errno).toBe('ENOENT');
    expect(await bindings(h.fs)).toEqual(before);
  });

  it('a probe that never returns: rollback incomplete, status failed, names the device left behind', async () => {
    const h = await host('dual-gpu', {
      faults: [{ kind: 'probe-hangs', address: GPU }],
      deps: { stepTimeoutMs: 1_500 },
    });
    const outcome = await h.executor.execute(job('hang-forever'));
    expect(outcome.status).toBe('failed');
    expect(outcome.reason?.code).toBe('rollback-incomplete');
    expect(outcome.reason?.message).toContain(GPU);
    expect(outcome.reason?.message).not.toContain(`${AUDIO}:`);
    expect(outcome.failedStep?.step.action).toBe('probe');
    expect(outcome.kernelError?.errno).toBe('ETIMEDOUT');
  });
});

describe('RebindExecutor: idempotency, refusals and locking', () => {
  it('a job id seen before returns the stored outcome and never writes again, even after a restart', async () => {
    const h = await host();
    const first = await h.executor.execute(job('once'));
    const writes = h.io.count;
    expect(writes).toBeGreaterThan(0);

    const again = await h.executor.execute(job('once', GPU, 'host'));
    expect(again).toEqual(first);
    const restarted = new RebindExecutor(h.deps);
    expect(await restarted.execute(job('once'))).toEqual(first);
    expect(h.io.count).toBe(writes);
  });

  it('a second call while the job runs awaits the first run', async () => {
    const h = await host('dual-gpu', { delayMs: 20 });
    const [a, b] = await Promise.all([
      h.executor.execute(job('concurrent')),
      h.executor.execute(job('concurrent')),
    ]);
    expect(a).toEqual(b);
    expect(a.status).toBe('succeeded');
    expect(h.io.modprobes).toEqual(['vfio_pci']);
  });

  it('a job cut off by an agent that died is reported interrupted, not run again', async () => {
    const h = await host();
    await mkdir(path.join(h.stateDir, 'jobs'), { recursive: true });
    await writeFile(path.join(h.stateDir, 'jobs/cut-off.running'), '999999999\n');
    const outcome = await h.executor.execute(job('cut-off'));
    expect(outcome.status).toBe('failed');
    expect(outcome.reason?.code).toBe('interrupted');
    expect(h.io.count).toBe(0);
  });

  it('read-only by default: refused without --allow-rebind, nothing written, not even state', async () => {
    const h = await host('dual-gpu', { deps: { allowRebind: false } });
    const outcome = await h.executor.execute(job('ro'));
    expect(outcome.status).toBe('refused');
    expect(outcome.reason?.code).toBe('read-only');
    expect(outcome.reason?.message).toContain('--allow-rebind');
    expect(h.io.count).toBe(0);
    expect(await readdir(h.stateDir)).toEqual([]);
  });

  it('host-critical is refused even with force', async () => {
    const h = await host();
    const outcome = await h.executor.execute(job('critical', ROOT_NVME, 'vfio', true));
    expect(outcome.status).toBe('refused');
    expect(outcome.reason?.code).toBe('blocked');
    expect(outcome.reason?.reasons.map((r) => r.code)).toContain('host-critical');
    expect(h.io.count).toBe(0);
  });

  it('warning-severity reasons need force; info reasons never do', async () => {
    const h = await host('mlx5-vf');
    const refused = await h.executor.execute(job('pf', MLX5_PF));
    expect(refused.status).toBe('refused');
    expect(refused.reason?.code).toBe('needs-force');
    expect(refused.reason?.reasons.map((r) => r.code)).toContain('sriov-vfs-enabled');
    expect(refused.reason?.reasons.every((r) => r.severity === 'warning')).toBe(true);
    expect(h.io.count).toBe(0);

    const forced = await h.executor.execute(job('pf-forced', MLX5_PF, 'vfio', true));
    expect(forced.reason?.code).not.toBe('needs-force');
    expect(h.io.count).toBeGreaterThan(0);

    // dual-gpu's GPU carries only info reasons (group-shared): no force needed.
    const gpu = await host();
    expect((await gpu.executor.execute(job('info-only'))).status).toBe('succeeded');
  });

  it('two concurrent jobs on one group run one after the other', async () => {
    const h = await host('dual-gpu', { delayMs: 10 });
    const order: string[] = [];
    let started = (): void => undefined;
    const aRunning = new Promise<void>((resolve) => {
      started = resolve;
    });
    const a = h.executor.execute(job('a', GPU, 'vfio'), (e) => {
      order.push(`a:${e.index}`);
      started();
    });
    // b starts while a is half-way through its writes, and must wait for the group.
    await aRunning;
    const b = h.executor.execute(job('b', AUDIO, 'host'), (e) => order.push(`b:${e.index}`));
    const [outA, outB] = await Promise.all([a, b]);
    expect(outA.status).toBe('succeeded');
    // b was planned after a finished, from the state a left: the group on vfio, so back it goes.
    expect(outB.status, JSON.stringify(outB.reason)).toBe('succeeded');
    expect(outB.before.map((x) => x.driver)).toEqual(['vfio-pci', 'vfio-pci']);
    const firstB = order.findIndex((s) => s.startsWith('b:'));
    const lastA = order.map((s) => s.startsWith('a:')).lastIndexOf(true);
    expect(firstB).toBeGreaterThan(lastA);
  });

  it('a job that cannot get its group within lockWaitMs is refused group-busy, having written nothing', async () => {
    const h = await host('dual-gpu', { delayMs: 50, deps: { lockWaitMs: 30 } });
    const slow = h.executor.execute(job('slow'));
    // Holding the group (its lock file is there), not merely started: a loaded machine is slow.
    const lock = path.join(h.stateDir, 'locks/group-21.lock');
    while (!existsSync(lock)) await new Promise((r) => setTimeout(r, 5));
    const busy = await h.executor.execute(job('busy', AUDIO, 'vfio'));
    expect(busy.status).toBe('refused');
    expect(busy.reason?.code).toBe('group-busy');
    expect((await slow).status).toBe('succeeded');
  });

  it('the group lock file keeps out other processes; a dead owner is taken over', async () => {
    const h = await host('dual-gpu', { deps: { lockWaitMs: 100 } });
    const lock = path.join(h.stateDir, 'locks/group-21.lock');
    await mkdir(path.dirname(lock), { recursive: true });

    // The parent process (vitest's) is alive and is not us: its lock holds.
    await writeFile(lock, `${process.ppid}\n`);
    const busy = await h.executor.execute(job('locked-out'));
    expect(busy.reason?.code).toBe('group-busy');
    expect(h.io.count).toBe(0);

    await writeFile(lock, '999999999\n');
    const taken = await h.executor.execute(job('stale'));
    expect(taken.status).toBe('succeeded');
    expect(existsSync(lock)).toBe(false);
  });

  it('a job that cannot be recorded (state dir unusable) does not run', async () => {
    const h = await host();
    const notADir = path.join(h.stateDir, 'file');
    await writeFile(notADir, '');
    const executor = new RebindExecutor({ ...h.deps, stateDir: notADir });
    const outcome = await executor.execute(job('unrecordable'));
    expect(outcome.status).toBe('refused');
    expect(outcome.reason?.code).toBe('state-unavailable');
    expect(h.io.count).toBe(0);
  });

  it('an unknown device is refused', async () => {
    const h = await host();
    const outcome: JobOutcome = await h.executor.execute(job('nope', '0000:99:00.0'));
    expect(outcome.status).toBe('refused');
    expect(outcome.reason?.code).toBe('unknown-device');
  });
});

describe('reapplyPersistedBindings', () => {
  it('binds persisted devices not on their driver, skips the rest, never touches a changed card', async () => {
    const h = await host();
    const at = new Date().toISOString();
    await persistBindings(h.stateDir, [
      {
        address: GPU,
        vendorId: '10de',
        deviceId: '2204',
        driver: 'vfio-pci',
        force: false,
        persistedAt: at,
      },
      {
        address: AUDIO,
        vendorId: '10de',
        deviceId: '1aef',
        driver: 'vfio-pci',
        force: false,
        persistedAt: at,
      },
      // Another card now sits in the slot this record names.
      {
        address: '0000:31:00.0',
        vendorId: '10de',
        deviceId: '9999',
        driver: 'vfio-pci',
        force: false,
        persistedAt: at,
      },
    ]);
    const before = await bindings(h.fs);
    const results = await reapplyPersistedBindings({ ...h.deps, allowRebind: false });
    expect(results.map((r) => [r.address, r.action])).toEqual([
      [GPU, 'bound'],
      // Moved with the GPU's group by the first job.
      [AUDIO, 'already-bound'],
      ['0000:31:00.0', 'device-changed'],
    ]);
    const after = await bindings(h.fs);
    expect(after[GPU]?.[0]).toBe('vfio-pci');
    expect(after['0000:31:00.0']).toEqual(before['0000:31:00.0']);
    expect(after['0000:31:00.1']).toEqual(before['0000:31:00.1']);

    const writes = h.io.count;
    const second = await reapplyPersistedBindings(h.deps);
    expect(second.map((r) => r.action)).toEqual([
      'already-bound',
      'already-bound',
      'device-changed',
    ]);
    expect(h.io.count).toBe(writes);
  });
});
