/**
 * `run --simulate`: the agent drives the kernel model of @vfio-fleet/host-fixtures over a fixture
 * tree (`--root`) instead of real sysfs, so one machine can host a whole simulated fleet and tests
 * can run real agent processes that rebind. The package is imported only here, lazily, so a real
 * agent never evaluates it.
 *
 * `--simulate-faults FILE` (hidden; tests and demos) injects the model's faults, so a rollback can
 * be shown end to end: JSON `{ "faults": [...], "probeHangMs": N }`, each fault as KernelFault in
 * kernel-model.ts, except that a `write-fails` path may be `{ "regex": "..." }`. Two more keys
 * exist for tests of a write stuck in the kernel: `sysfsWrites`, `{ path, value? }` writes that go
 * to the tree's own file through the real writer child (a FIFO there blocks like a write stuck in
 * the kernel), and `stepTimeoutMs`, so such a job gives up within a test's patience.
 */
import { readFile } from 'node:fs/promises';
import { KERNEL_ERRNOS, type KernelIo } from '@vfio-fleet/core';
import type { KernelFault } from '@vfio-fleet/host-fixtures';
import { z } from 'zod';
import { type DeadlineKernelIo, SysfsKernelIo } from '../kernel/sysfs-kernel-io';

const errnoSchema = z.enum(KERNEL_ERRNOS);

const faultSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('write-fails'),
    path: z.union([z.string(), z.object({ regex: z.string() })]),
    errno: errnoSchema,
    times: z.number().int().positive().optional(),
  }),
  z.object({ kind: z.literal('bind-refuses'), driver: z.string(), errno: errnoSchema.optional() }),
  z.object({ kind: z.literal('probe-hangs'), address: z.string() }),
  z.object({
    kind: z.literal('modprobe-fails'),
    module: z.string(),
    errno: errnoSchema.optional(),
  }),
]);

const faultsFileSchema = z.object({
  faults: z.array(faultSchema),
  probeHangMs: z.number().int().nonnegative().optional(),
  sysfsWrites: z
    .array(z.object({ path: z.string().startsWith('/sys/'), value: z.string().optional() }))
    .optional(),
  stepTimeoutMs: z.number().int().positive().optional(),
});

export interface SysfsWrite {
  path: string;
  value?: string | undefined;
}

export interface SimulatedKernelOptions {
  faults: KernelFault[];
  probeHangMs?: number;
  /** Writes (of any value when none is given) that go to the tree's file, not the model. */
  sysfsWrites?: SysfsWrite[];
  /** The executor's step timeout (the agent's default otherwise). */
  stepTimeoutMs?: number;
}

export async function readFaultsFile(file: string): Promise<SimulatedKernelOptions> {
  const parsed = faultsFileSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${file}: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`);
  }
  const faults = parsed.data.faults.map((fault): KernelFault => {
    if (fault.kind !== 'write-fails') return fault;
    const path = typeof fault.path === 'string' ? fault.path : new RegExp(fault.path.regex);
    return { ...fault, path };
  });
  const { probeHangMs, sysfsWrites, stepTimeoutMs } = parsed.data;
  return {
    faults,
    ...(probeHangMs === undefined ? {} : { probeHangMs }),
    ...(sysfsWrites === undefined ? {} : { sysfsWrites }),
    ...(stepTimeoutMs === undefined ? {} : { stepTimeoutMs }),
  };
}

export async function simulatedKernel(
  root: string,
  options: SimulatedKernelOptions,
): Promise<KernelIo> {
  const { KernelModel } = await import('@vfio-fleet/host-fixtures');
  const { probeHangMs, faults } = options;
  const model = new KernelModel(
    root,
    probeHangMs === undefined ? { faults } : { faults, probeHangMs },
  );
  const writes = options.sysfsWrites ?? [];
  if (writes.length === 0) return model;
  // Not signalled when abandoned: a FIFO's open is interruptible, a write in D state is not.
  return new SplitKernelIo(model, new SysfsKernelIo(root, { abandonSignal: null }), writes);
}

/** The model, except some writes: those go to the tree's files through the real writer. */
export class SplitKernelIo implements DeadlineKernelIo {
  constructor(
    private readonly model: KernelIo,
    readonly sysfs: SysfsKernelIo,
    private readonly writes: readonly SysfsWrite[],
  ) {}

  private direct(hostPath: string, value: string): boolean {
    return this.writes.some((w) => w.path === hostPath && (w.value ?? value) === value);
  }

  write(hostPath: string, value: string): Promise<void> {
    return this.direct(hostPath, value)
      ? this.sysfs.write(hostPath, value)
      : this.model.write(hostPath, value);
  }

  writeWithin(hostPath: string, value: string, deadlineMs: number): Promise<void> {
    return this.direct(hostPath, value)
      ? this.sysfs.writeWithin(hostPath, value, deadlineMs)
      : this.model.write(hostPath, value);
  }

  modprobe(module: string): Promise<void> {
    return this.model.modprobe(module);
  }
}
