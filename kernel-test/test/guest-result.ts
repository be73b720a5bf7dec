/**
 * The guest's result document (kernel-test/guest/scenario.mjs) and how it comes back: boot the
 * guest under a timeout, cut the base64 between the markers out of the serial console, parse it.
 * Anything missing fails with the console's tail, so a hung or panicking guest explains itself.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';

const deviceViewSchema = z.object({
  vendor: z.string().nullable(),
  device: z.string().nullable(),
  class: z.string().nullable(),
  driver: z.string().nullable(),
  override: z.string().nullable(),
  iommuGroup: z.string().nullable(),
});

/** What sysfs itself says, read by the guest script without the agent. */
export const viewSchema = z.object({
  devices: z.record(z.string(), deviceViewSchema),
  groups: z.record(z.string(), z.array(z.string())),
  /** Interface name → PCI address of the function it belongs to. */
  netdevs: z.record(z.string(), z.string()),
  devVfio: z.array(z.string()),
});
export type View = z.infer<typeof viewSchema>;

const writeSchema = z.object({ path: z.string(), value: z.string() });
export type SysfsWrite = z.infer<typeof writeSchema>;

const stepSchema = z.object({
  name: z.string(),
  args: z.array(z.string()),
  code: z.number().nullable(),
  signal: z.string().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  ms: z.number(),
  setup: z.array(writeSchema),
  teardown: z.array(writeSchema),
  fault: z.enum(['vfio-pci-module-missing', 'dev-vfio-hidden']).nullable(),
  before: viewSchema,
  after: viewSchema,
  view: viewSchema,
});
export type GuestStep = z.infer<typeof stepSchema>;

export const guestResultSchema = z.object({
  ok: z.boolean(),
  error: z.string().nullable(),
  uname: z.string().nullable(),
  cmdline: z.string().nullable(),
  dmesgIommu: z.string(),
  lspci: z.string(),
  initial: viewSchema,
  scan: z.object({ code: z.number().nullable(), stderr: z.string(), json: z.unknown() }),
  capture: z.object({ code: z.number().nullable(), stdout: z.string(), stderr: z.string() }),
  captureTarBase64: z.string(),
  roles: z.object({
    e1000e: z.array(z.string()),
    e1000: z.array(z.string()),
    virtio: z.array(z.string()),
  }),
  steps: z.array(stepSchema),
  final: viewSchema,
  ms: z.number(),
});
export type GuestResult = z.infer<typeof guestResultSchema>;

const BEGIN = '===KT-RESULT-BEGIN===';
const END = '===KT-RESULT-END===';

export interface Boot {
  result: GuestResult;
  console: string;
  work: string;
  /** Seconds: image build (cached or not) and the guest's run, as boot-guest.sh measured them. */
  log: string;
  wallMs: number;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** The result between the markers; throws with the console's tail when it is not there. */
export function parseConsole(consoleText: string, context: string): GuestResult {
  const clean = consoleText.replaceAll('\r', '');
  const begin = clean.indexOf(BEGIN);
  const end = clean.indexOf(END, begin + BEGIN.length);
  if (begin < 0 || end < 0) {
    throw new Error(
      `the guest printed no result (${context}); last console lines:\n${tail(clean, 60)}`,
    );
  }
  const base64 = clean
    .slice(begin + BEGIN.length, end)
    .split('\n')
    .map((l) => l.trim())
    // Kernel lines (emergencies only, see init.sh) could still land between the result lines.
    .filter((l) => /^[A-Za-z0-9+/=]+$/.test(l))
    .join('');
  const json: unknown = JSON.parse(Buffer.from(base64, 'base64').toString('utf8'));
  const parsed = guestResultSchema.safeParse(json);
  if (!parsed.success) {
    const error = typeof json === 'object' && json !== null ? Reflect.get(json, 'error') : null;
    throw new Error(
      `the guest's result is incomplete (${context}): ${String(error ?? parsed.error.message)}\n` +
        `last console lines:\n${tail(clean, 60)}`,
    );
  }
  return parsed.data;
}

/**
 * Boots the guest once (scripts/boot-guest.sh: build the cached image, QEMU under `timeout`).
 * VFIO_FLEET_KERNEL_CONSOLE=FILE reuses a console log instead, for working on the assertions.
 */
export function bootGuest(): Boot {
  const started = Date.now();
  const reuse = process.env.VFIO_FLEET_KERNEL_CONSOLE;
  if (reuse !== undefined && reuse !== '') {
    const text = readFileSync(reuse, 'utf8');
    return {
      result: parseConsole(text, reuse),
      console: text,
      work: path.dirname(reuse),
      log: `reused ${reuse}`,
      wallMs: 0,
    };
  }
  const work = mkdtempSync(path.join(os.tmpdir(), 'vfio-fleet-kernel-test-'));
  const script = path.join(import.meta.dirname, '..', 'scripts', 'boot-guest.sh');
  const run = spawnSync('bash', [script], {
    encoding: 'utf8',
    env: { ...process.env, VFIO_FLEET_KERNEL_WORK: work },
    // The guest has its own 300 s timeout inside; this one only guards the image build.
    timeout: 480_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  const consolePath = path.join(work, 'console.log');
  let text = '';
  try {
    text = readFileSync(consolePath, 'utf8');
  } catch {
    // No console at all: the build failed before QEMU started; its stderr says why.
  }
  const timedOut = run.status === 124 || run.status === 137;
  const context =
    `boot-guest.sh exit ${run.status ?? run.signal}` +
    `${timedOut ? ' (QEMU killed by its timeout: the guest hung or was too slow)' : ''}` +
    `, work dir ${work}`;
  if (text === '') {
    throw new Error(`${context}: no console output\n${tail(`${run.stderr}`, 40)}`);
  }
  const result = parseConsole(text, context);
  // The 45 MB initramfs is rebuilt from the cache each run; the console log stays for a look.
  for (const built of ['initrd', 'overlay', 'overlay.cpio.gz']) {
    rmSync(path.join(work, built), { recursive: true, force: true });
  }
  return { result, console: text, work, log: `${run.stderr}`, wallMs: Date.now() - started };
}
