/**
 * `run --simulate`: the agent drives the kernel model of @vfio-fleet/host-fixtures over a fixture
 * tree (`--root`) instead of real sysfs, so one machine can host a whole simulated fleet and tests
 * can run real agent processes that rebind. The package is imported only here, lazily, so a real
 * agent never evaluates it.
 *
 * `--simulate-faults FILE` (hidden; tests and demos) injects the model's faults, so a rollback can
 * be shown end to end: JSON `{ "faults": [...], "probeHangMs": N }`, each fault as KernelFault in
 * kernel-model.ts, except that a `write-fails` path may be `{ "regex": "..." }`.
 */
import { readFile } from 'node:fs/promises';
import { KERNEL_ERRNOS, type KernelIo } from '@vfio-fleet/core';
import type { KernelFault } from '@vfio-fleet/host-fixtures';
import { z } from 'zod';

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
});

export interface SimulatedKernelOptions {
  faults: KernelFault[];
  probeHangMs?: number;
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
  const { probeHangMs } = parsed.data;
  return probeHangMs === undefined ? { faults } : { faults, probeHangMs };
}

export async function simulatedKernel(
  root: string,
  options: SimulatedKernelOptions,
): Promise<KernelIo> {
  const { KernelModel } = await import('@vfio-fleet/host-fixtures');
  return new KernelModel(root, options);
}
