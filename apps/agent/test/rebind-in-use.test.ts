// The executor's last look before its first write: a VM that took a device after the host was
// read (and after planRebind accepted the plan) stops the job with nothing written. On a real
// kernel that unbind would block until the VM exits, or pull the device out of the guest.
import { mkdtemp, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { KernelIo } from '@vfio-fleet/core';
import { buildScenario, KernelModel } from '@vfio-fleet/host-fixtures';
import { afterEach, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { createLogger } from '../src/logger';
import { RebindExecutor } from '../src/rebind/executor';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const VM = {
  pid: 4242,
  comm: 'qemu-system-x86',
  cmdline: ['qemu-system-x86_64', '-name', 'guest=late-vm'],
};

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  tempDirs.push(dir);
  return dir;
}

/** Records everything that reaches the kernel. */
class RecordingIo implements KernelIo {
  readonly calls: string[] = [];
  constructor(private readonly inner: KernelIo) {}
  write(p: string, value: string): Promise<void> {
    this.calls.push(`write ${p} ${value}`);
    return this.inner.write(p, value);
  }
  modprobe(module: string): Promise<void> {
    this.calls.push(`modprobe ${module}`);
    return this.inner.modprobe(module);
  }
}

/**
 * A HostFs that runs `hook` just before the `nth` read of `target`: a VM starting at that moment
 * of the job. Reads of the device's `enable`: one per collect (two before the plan is final),
 * then the executor's re-check.
 */
class HookedFs extends HostFs {
  private reads = 0;
  constructor(
    root: string,
    private readonly target: string,
    private readonly nth: number,
    private readonly hook: () => Promise<void>,
  ) {
    super(root);
  }
  override async readAttr(p: string): Promise<string | null> {
    if (p === this.target && ++this.reads === this.nth) await this.hook();
    return super.readAttr(p);
  }
}

async function vfioBoundHost(hookAtRead: number | null) {
  const root = await tempDir('inuse-host-');
  const stateDir = await tempDir('inuse-state-');
  await buildScenario(root, 'vfio-bound');
  const model = new KernelModel(root);
  const io = new RecordingIo(model);
  const releases: Array<() => Promise<void>> = [];
  const fs =
    hookAtRead === null
      ? new HostFs(root)
      : new HookedFs(root, `/sys/bus/pci/devices/${GPU}/enable`, hookAtRead, async () => {
          releases.push(await model.holdDevice(GPU, VM));
        });
  const executor = new RebindExecutor({
    fs,
    io,
    stateDir,
    allowRebind: true,
    logger: createLogger('silent'),
    // Were the re-check missing, the unbind would block on the holder: fail fast, not hang.
    stepTimeoutMs: 2000,
  });
  return { root, model, io, executor, releases };
}

describe('RebindExecutor: a device taken by a VM after the host was read', () => {
  it('restore is refused in-use, naming the VM, with nothing written', async () => {
    const h = await vfioBoundHost(3);
    const outcome = await h.executor.execute({
      jobId: 'late-vm-1',
      address: AUDIO,
      target: 'host',
      force: true,
    });
    expect(h.releases).toHaveLength(1);
    expect(outcome.status).toBe('refused');
    expect(outcome.reason?.code).toBe('in-use');
    expect(outcome.reason?.message).toContain(
      `${GPU} is in use by VM "late-vm" (pid 4242, "qemu-system-x86")`,
    );
    expect(outcome.reason?.message).toContain('taken after the host was read');
    expect(outcome.reason?.message).toContain('nothing was written');
    expect(h.io.calls).toEqual([]);
    expect(outcome.before).toEqual(outcome.after);
    for (const release of h.releases) await release();
  });

  it('held before the job: planRebind itself refuses, also with nothing written', async () => {
    const h = await vfioBoundHost(1);
    const outcome = await h.executor.execute({
      jobId: 'early-vm-1',
      address: GPU,
      target: 'host',
      force: true,
    });
    expect(outcome).toMatchObject({ status: 'refused', reason: { code: 'in-use' } });
    expect(outcome.reason?.message).not.toContain('taken after the host was read');
    expect(h.io.calls).toEqual([]);
    for (const release of h.releases) await release();
  });

  it('nobody takes it: the same restore runs (the re-check does not refuse a free device)', async () => {
    const h = await vfioBoundHost(null);
    const outcome = await h.executor.execute({
      jobId: 'free-1',
      address: GPU,
      target: 'host',
      force: true,
    });
    expect(outcome.reason?.code).not.toBe('in-use');
    expect(h.io.calls.length).toBeGreaterThan(0);
  });

  it('a held group already on vfio: a bind is done, with nothing to write and nothing refused', async () => {
    const h = await vfioBoundHost(1);
    const outcome = await h.executor.execute({
      jobId: 'held-done-1',
      address: GPU,
      target: 'vfio',
      force: true,
    });
    expect(h.releases).toHaveLength(1);
    expect(outcome.status).toBe('succeeded');
    expect(h.io.calls).toEqual([]);
    for (const release of h.releases) await release();
  });

  it('a VM takes a VF mid-job: its PF is not unbound (SR-IOV off would block), the job rolls back', async () => {
    const root = await tempDir('inuse-vf-');
    const stateDir = await tempDir('inuse-vf-state-');
    await buildScenario(root, 'mlx5-vf');
    const model = new KernelModel(root);
    const [pf, vf] = ['0000:41:00.0', '0000:41:00.2'];
    await model.modprobe('vfio_pci');
    await model.write(`/sys/bus/pci/devices/${vf}/driver_override`, 'vfio-pci');
    await model.write('/sys/bus/pci/drivers/mlx5_core/unbind', vf);
    await model.write('/sys/bus/pci/drivers_probe', vf);
    const releases: Array<() => Promise<void>> = [];
    /** The VM starts right after the job's first write, once its last look has passed. */
    class VmStartsIo extends RecordingIo {
      override async write(p: string, value: string): Promise<void> {
        await super.write(p, value);
        if (releases.length === 0) releases.push(await model.holdDevice(vf, VM));
      }
    }
    const io = new VmStartsIo(model);
    const executor = new RebindExecutor({
      fs: new HostFs(root),
      io,
      stateDir,
      allowRebind: true,
      logger: createLogger('silent'),
    });
    const outcome = await executor.execute({
      jobId: 'pf',
      address: pf,
      target: 'vfio',
      force: true,
    });
    for (const release of releases) await release();
    expect(releases).toHaveLength(1);
    expect(outcome.status).toBe('rolled_back');
    expect(outcome.reason?.code).toBe('in-use');
    expect(outcome.reason?.message).toContain(`${vf} is in use by`);
    expect(io.calls.filter((c) => c.includes('unbind'))).toEqual([]);
    expect(outcome.after).toEqual(outcome.before);
  });
});
