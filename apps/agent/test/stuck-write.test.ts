// A sysfs write that blocks for real: the GPU's driver `unbind` is a FIFO, so the writer child's
// open(2) blocks until the test opens it for reading, as a write blocked behind a VM's open does
// on a real kernel. The rest of the host is the kernel model. The job must end stuck-in-kernel,
// scans and other groups' jobs must go on meanwhile, and the device comes back once it returns.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { lstat, mkdir, mkdtemp, open, realpath, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { hostSnapshotSchema, jobResultMessageSchema } from '@vfio-fleet/core';
import { buildScenario, KernelModel } from '@vfio-fleet/host-fixtures';
import { afterEach, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';
import { readPciDevices } from '../src/inventory/read-pci-devices';
import { stuckWrites } from '../src/kernel/stuck-writes';
import {
  type DeadlineKernelIo,
  lockedReaderFor,
  SysfsKernelIo,
} from '../src/kernel/sysfs-kernel-io';
import { createLogger } from '../src/logger';
import { RebindExecutor } from '../src/rebind/executor';
import { agentDir } from './helpers/run-agent';
import { bundleWriter } from './helpers/writer-command';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const OTHER_GPU = '0000:31:00.0';
const STUCK_PATH = '/sys/bus/pci/drivers/nvidia/unbind';
const STEP_TIMEOUT_MS = 1500;
const agentBin = path.join(agentDir, 'bin/vfio-fleet-agent.mjs');

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function tempDir(prefix: string): Promise<string> {
  const dir = await realpath(await mkdtemp(path.join(os.tmpdir(), prefix)));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** The kernel model, except the GPU's unbind from nvidia: SysfsKernelIo, into the FIFO. */
class FifoUnbindIo implements DeadlineKernelIo {
  /** Resolves when the write into the FIFO has been sent (and blocks). */
  readonly blocked: Promise<void>;
  private markBlocked: () => void = () => undefined;
  constructor(
    private readonly model: KernelModel,
    readonly sysfs: SysfsKernelIo,
  ) {
    this.blocked = new Promise((resolve) => {
      this.markBlocked = resolve;
    });
  }
  write(p: string, value: string): Promise<void> {
    return this.writeWithin(p, value, STEP_TIMEOUT_MS);
  }
  writeWithin(p: string, value: string, deadlineMs: number): Promise<void> {
    if (p !== STUCK_PATH || value !== GPU) return this.model.write(p, value);
    this.markBlocked();
    return this.sysfs.writeWithin(p, value, deadlineMs);
  }
  modprobe(module: string): Promise<void> {
    return this.model.modprobe(module);
  }
}

async function host(abandonSignal: NodeJS.Signals | null) {
  const root = await tempDir('stuck-host-');
  const stateDir = await tempDir('stuck-state-');
  await buildScenario(root, 'dual-gpu');
  const model = new KernelModel(root);
  const fifo = path.join(root, 'sys/bus/pci/drivers/nvidia/unbind');
  await rm(fifo);
  execFileSync('mkfifo', [fifo]);
  const sysfs = new SysfsKernelIo(root, { writer: bundleWriter, abandonSignal });
  const io = new FifoUnbindIo(model, sysfs);
  const fs = new HostFs(root);
  const executor = new RebindExecutor({
    fs,
    io,
    stateDir,
    allowRebind: true,
    logger: createLogger('silent'),
    stepTimeoutMs: STEP_TIMEOUT_MS,
  });
  /** Reads the FIFO: the blocked open and write return, and the writer child exits. */
  const release = async (): Promise<string> => {
    const handle = await open(fifo, 'r');
    try {
      return (await handle.readFile('utf8')).trim();
    } finally {
      await handle.close();
    }
  };
  let released = false;
  cleanups.push(async () => {
    sysfs.close();
    if (!released && stuckWrites.forDevice(root, GPU) !== null) await release();
  });
  const scan = () => collectHost(fs);
  return {
    root,
    executor,
    blocked: io.blocked,
    scan,
    release: () => {
      released = true;
      return release();
    },
  };
}

function cleared(root: string): Promise<void> {
  return new Promise((resolve) => {
    const stop = stuckWrites.subscribe((write, event) => {
      if (event === 'cleared' && write.root === root && write.address === GPU) {
        stop();
        resolve();
      }
    });
    if (stuckWrites.forDevice(root, GPU) === null) {
      stop();
      resolve();
    }
  });
}

describe('a sysfs write stuck in the kernel', () => {
  it('ends the job stuck-in-kernel; scans and other groups go on; it clears when the write returns', async () => {
    const h = await host(null);
    const stuckJob = h.executor.execute({
      jobId: 'stuck-1',
      address: GPU,
      target: 'vfio',
      force: true,
    });
    await h.blocked;
    // Meanwhile, a scan completes and another group's job (same driver) runs to the end.
    const meanwhile = await h.scan();
    expect(meanwhile.devices.map((d) => d.address)).toContain(OTHER_GPU);
    const other = await h.executor.execute({
      jobId: 'other-1',
      address: OTHER_GPU,
      target: 'vfio',
      force: true,
    });
    expect(other.reason).toBeNull();
    expect(other.status).toBe('succeeded');

    const outcome = await stuckJob;
    expect(outcome.status).toBe('failed');
    expect(outcome.reason?.code).toBe('stuck-in-kernel');
    expect(outcome.reason?.message).toContain(`to ${STUCK_PATH}`);
    expect(outcome.reason?.message).toContain(`will not read or write ${GPU} until it returns`);
    expect(outcome.reason?.message).toContain('The agent keeps working');
    expect(outcome.failedStep?.step.action).toBe('unbind');
    // What the server receives: a valid job-result.
    expect(
      jobResultMessageSchema.safeParse({ type: 'job-result', ...outcome }).error,
    ).toBeUndefined();
    // The stuck GPU is neither read nor rolled back; its audio function is, and is as before.
    expect(outcome.after.map((b) => b.address)).toEqual([AUDIO]);
    expect(outcome.after).toEqual(outcome.before.filter((b) => b.address === AUDIO));
    expect(stuckWrites.forDevice(h.root, GPU)).toMatchObject({ path: STUCK_PATH, value: GPU });

    const during = await h.scan();
    expect(during.devices.map((d) => d.address)).not.toContain(GPU);
    expect(during.devices.find((d) => d.address === AUDIO)?.driver).toBe('snd_hda_intel');
    expect(during.devices.find((d) => d.address === OTHER_GPU)?.driver).toBe('vfio-pci');
    const problem = during.problems.find((p) => p.device?.address === GPU);
    expect(problem?.message).toMatch(/^stuck in the kernel: the write of "0000:17:00.0" to /);
    expect(problem?.device?.iommuGroup).toBe(21);
    // Its group is refused as a whole while the write is stuck, with nothing written.
    const again = await h.executor.execute({
      jobId: 'stuck-2',
      address: AUDIO,
      target: 'vfio',
      force: true,
    });
    expect(again.status).toBe('refused');
    const gone = cleared(h.root);
    expect(await h.release()).toBe(GPU);
    await gone;
    expect(stuckWrites.forDevice(h.root, GPU)).toBeNull();
    const after = await h.scan();
    expect(after.devices.find((d) => d.address === GPU)?.driver).toBe('nvidia');
    expect(after.problems.some((p) => p.device?.address === GPU)).toBe(false);
  });

  it('a write that returns within one more step timeout (SIGKILL ends a FIFO open) is an ordinary timeout, rolled back', async () => {
    const h = await host('SIGKILL');
    const outcome = await h.executor.execute({
      jobId: 'kill-1',
      address: GPU,
      target: 'vfio',
      force: true,
    });
    expect(stuckWrites.forDevice(h.root, GPU)).toBeNull();
    expect(outcome.status).toBe('rolled_back');
    expect(outcome.reason?.code).toBe('step-timeout');
    expect(outcome.kernelError?.message).toContain('stuck in the kernel');
    // The GPU was rolled back too: its driver_override is unset again.
    expect(outcome.after).toEqual(outcome.before);
    const after = await h.scan();
    expect(after.devices.find((d) => d.address === GPU)).toMatchObject({
      driver: 'nvidia',
      driverOverride: null,
    });
  });

  // Without the guarded read the scan blocks on the FIFO: the 15 s limit fails it rather than hang.
  it.each([
    {
      // An operator's `echo > unbind` blocked behind the VM holding the GPU.
      what: 'a held vfio device',
      scenario: 'vfio-bound' as const,
      address: GPU,
      attribute: 'driver_override',
      content: '(null)',
      enable: true,
      readAgain: { driver: 'vfio-pci', inUse: true },
    },
    {
      // The same unbind as the kernel shows it: the driver link is gone before remove() blocks,
      // while the device is still enabled (kernel-test's scan-stuck).
      what: 'an enabled device whose driver link is already gone',
      scenario: 'vfio-bound' as const,
      address: GPU,
      attribute: 'driver_override',
      content: 'vfio-pci',
      enable: true,
      unlink: true,
      readAgain: { driver: null, driverOverride: 'vfio-pci', inUse: false },
    },
    {
      // `echo 0 > sriov_numvfs` blocked behind a VM holding one of its VFs.
      what: 'an SR-IOV PF',
      scenario: 'mlx5-vf' as const,
      address: '0000:41:00.0',
      attribute: 'sriov_numvfs',
      content: '8',
      enable: false,
      readAgain: { driver: 'mlx5_core', sriov: expect.objectContaining({ numVfs: 8 }) },
    },
  ])(
    '$what whose lock another process holds: the scan marks it stuck, not frozen',
    async ({ scenario, address, attribute, content, enable, unlink, readAgain }) => {
      // The attribute is a FIFO: its read blocks until a writer opens it, like a read that waits
      // for the device lock a blocked write holds.
      const root = await tempDir('stuck-read-');
      await buildScenario(root, scenario);
      const dir = path.join(root, 'sys/bus/pci/devices', address);
      if (enable) await writeFile(path.join(dir, 'enable'), '1\n');
      if (unlink === true) await rm(path.join(dir, 'driver'));
      const fifo = path.join(dir, attribute);
      await rm(fifo);
      execFileSync('mkfifo', [fifo]);
      const sysfs = new SysfsKernelIo(root, { writer: bundleWriter, abandonSignal: null });
      const fs = new HostFs(root);
      const scan = () => collectHost(fs, { lockedRead: lockedReaderFor(sysfs, 300) });
      let released = false;
      const release = async () => {
        released = true;
        const handle = await open(fifo, 'w');
        await handle.writeFile(`${content}\n`);
        await handle.close();
      };
      cleanups.push(async () => {
        sysfs.close();
        if (!released) await release();
      });

      const during = await scan();
      expect(during.devices.map((d) => d.address)).not.toContain(address);
      expect(during.devices.length).toBeGreaterThan(3);
      const problem = during.problems.find((p) => p.device?.address === address);
      expect(problem?.message).toContain(
        `stuck in the kernel: a read of /sys/bus/pci/devices/${address}/${attribute}`,
      );
      expect(stuckWrites.forDevice(root, address)).toMatchObject({ operation: 'read' });
      // While it is stuck, a rescan does not try again (it would only add a blocked reader).
      expect((await scan()).devices.map((d) => d.address)).not.toContain(address);

      const gone = new Promise<void>((resolve) => {
        const stop = stuckWrites.subscribe((write, event) => {
          if (event === 'cleared' && write.root === root && write.address === address) {
            stop();
            resolve();
          }
        });
      });
      await release();
      await gone;
      await rm(fifo);
      await writeFile(fifo, `${content}\n`);
      const after = await scan();
      expect(after.devices.find((d) => d.address === address)).toMatchObject(readAgain);
    },
    15_000,
  );

  it('an unbind blocked behind a VM in the kernel model: its driver link is gone, yet the scan marks it stuck, not frozen', async () => {
    // The model makes the held GPU's driver_override hang for readers while the unbind waits,
    // through the filesystem, as the kernel does; the `driver` link is already gone (measured).
    const root = await tempDir('stuck-model-');
    await buildScenario(root, 'vfio-bound');
    const model = new KernelModel(root);
    const release = await model.holdDevice(GPU, { pid: 4242, comm: 'qemu', cmdline: ['qemu'] });
    const unbind = model.write('/sys/bus/pci/drivers/vfio-pci/unbind', GPU);
    const fifo = path.join(root, 'sys/bus/pci/devices', GPU, 'driver_override');
    const isFifo = () => lstat(fifo).then((s) => s.isFIFO());
    for (let i = 0; i < 500 && !(await isFifo()); i += 1) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await isFifo()).toBe(true);
    const sysfs = new SysfsKernelIo(root, { writer: bundleWriter, abandonSignal: null });
    cleanups.push(async () => {
      sysfs.close();
      await release();
      await unbind;
    });
    const scan = () => collectHost(new HostFs(root), { lockedRead: lockedReaderFor(sysfs, 300) });

    const during = await scan();
    expect(during.devices.map((d) => d.address)).not.toContain(GPU);
    expect(during.devices.map((d) => d.address)).toContain(AUDIO);
    const problem = during.problems.find((p) => p.device?.address === GPU);
    expect(problem?.message).toContain(
      `stuck in the kernel: a read of /sys/bus/pci/devices/${GPU}/driver_override`,
    );
    const gone = new Promise<void>((resolve) => {
      const stop = stuckWrites.subscribe((write, event) => {
        if (event === 'cleared' && write.root === root && write.address === GPU) {
          stop();
          resolve();
        }
      });
    });
    await release();
    await unbind;
    await gone;
    const after = await scan();
    expect(after.devices.find((d) => d.address === GPU)).toMatchObject({
      driver: null,
      driverOverride: 'vfio-pci',
      inUse: false,
    });
  }, 15_000);

  it("a process that exits with a write stuck leaves its caller's pipes free", async () => {
    // `out=$(vfio-fleet-agent bind ...)` returns when the agent exits, not when the kernel lets
    // the abandoned write return: the writer child must not inherit the agent's stdout or stderr.
    const root = await tempDir('stuck-exit-');
    await mkdir(path.join(root, 'sys/bus/pci/drivers/nvidia'), { recursive: true });
    const fifo = path.join(root, 'sys/bus/pci/drivers/nvidia/unbind');
    execFileSync('mkfifo', [fifo]);
    cleanups.push(async () => {
      const handle = await open(fifo, 'r');
      await handle.close();
    });
    const script = `
      import { SysfsKernelIo } from ${JSON.stringify(path.resolve('src/kernel/sysfs-kernel-io.ts'))};
      const io = new SysfsKernelIo(${JSON.stringify(root)}, {
        writer: ${JSON.stringify(bundleWriter)},
        abandonSignal: null,
      });
      await io.writeWithin('/sys/bus/pci/drivers/nvidia/unbind', '${GPU}', 300).catch((e) => console.log(e.errno));
    `;
    const run = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
    expect(run.error).toBeUndefined();
    expect(run.stdout.trim()).toBe('ETIMEDOUT');
    expect(run.status).toBe(0);
  }, 30_000);

  it('a guard that cannot start its child reads in-process, as before, rather than fail the scan', async () => {
    const root = await tempDir('guard-broken-');
    await buildScenario(root, 'vfio-bound');
    await writeFile(path.join(root, 'sys/bus/pci/devices', GPU, 'enable'), '1\n');
    const sysfs = new SysfsKernelIo(root, {
      writer: { command: path.join(root, 'no-agent'), args: [] },
    });
    const snapshot = await collectHost(new HostFs(root), {
      lockedRead: lockedReaderFor(sysfs, 300),
    });
    expect(snapshot.devices.find((d) => d.address === GPU)).toMatchObject({ driver: 'vfio-pci' });
  });

  it('scan and status read guarded as the daemon does: a device behind a stuck write is reported, not waited on', async () => {
    const root = await tempDir('stuck-cli-');
    await buildScenario(root, 'vfio-bound');
    const dir = path.join(root, 'sys/bus/pci/devices', GPU);
    await writeFile(path.join(dir, 'enable'), '1\n');
    await rm(path.join(dir, 'driver'));
    const fifo = path.join(dir, 'driver_override');
    await rm(fifo);
    execFileSync('mkfifo', [fifo]);
    // Async: an in-process read of the FIFO would block the agent, and the test's limit fails it.
    const agent = (...args: string[]) =>
      new Promise<{ status: number | null; stdout: string }>((resolve) => {
        execFile(
          process.execPath,
          [agentBin, ...args, '--root', root],
          { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } },
          (error, stdout) => resolve({ status: error === null ? 0 : Number(error.code), stdout }),
        );
      });
    const run = await agent('scan', '--json');
    expect(run.status).toBe(0);
    // `status` reads the host the same way.
    expect((await agent('status', '--json', '--state-dir', path.join(root, 'state'))).status).toBe(
      0,
    );
    const snapshot = hostSnapshotSchema.parse(JSON.parse(run.stdout));
    expect(snapshot.devices.map((d) => d.address)).not.toContain(GPU);
    expect(snapshot.devices.map((d) => d.address)).toContain(AUDIO);
    expect(snapshot.problems.find((p) => p.device?.address === GPU)?.message).toContain(
      'stuck in the kernel',
    );
  }, 20_000);

  it('guards enabled driverless endpoints and vfio devices; not idle ones, nor bridges', async () => {
    const root = await tempDir('guard-which-');
    await buildScenario(root, 'vfio-bound');
    const devices = path.join(root, 'sys/bus/pci/devices');
    const BRIDGE = '0000:01:00.0';
    for (const address of [GPU, BRIDGE]) {
      await writeFile(path.join(devices, address, 'enable'), '1\n');
    }
    await rm(path.join(devices, GPU, 'driver'));
    const fs = new HostFs(root);
    const asked: string[] = [];
    const spy = async (hostPath: string) => {
      asked.push(hostPath);
      return fs.readAttr(hostPath);
    };
    await readPciDevices(fs, null, spy);
    // The audio function is on vfio-pci but idle: nothing holds it, nothing can block its lock.
    expect(asked).toEqual([`/sys/bus/pci/devices/${GPU}/driver_override`]);
  });
});
