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
  /** The device guest/vfio-hold.c held open during the step, and how. */
  held: z
    .object({ address: z.string(), pid: z.number().int(), anon: z.boolean() })
    .nullable()
    .default(null),
  /** A write the guest itself started during the step that blocked behind the holder. */
  stuckWrite: writeSchema.nullable().default(null),
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
  /** e1000e's `enable` on vfio-pci: idle, while vfio-hold has its device fd, after it exited. */
  enableIdle: z.string().nullable(),
  held: z.object({ address: z.string(), pid: z.number().int(), enable: z.string().nullable() }),
  enableReleased: z.string().nullable(),
  /** scan-stuck: an unbind blocked behind vfio-hold while the agent scanned (scenario.mjs). */
  stuck: z
    .object({
      address: z.string(),
      /** The driver link went while the unbind was blocked in remove(). */
      unlinked: z.boolean(),
      pendingBeforeScan: z.boolean(),
      /** The unbind had still not returned when the scan ended. */
      pendingAfterScan: z.boolean(),
      /** The scan had not ended within the scenario's limit, so the holder was let go under it. */
      scanHung: z.boolean(),
      scanMs: z.number(),
      /** A restore of the device run beside that scan; `hung` when it outlived the limit. */
      restore: z.object({
        code: z.number().nullable(),
        stdout: z.string(),
        stderr: z.string(),
        ms: z.number(),
        hung: z.boolean().default(false),
      }),
      unbindCode: z.number().nullable(),
      unbindMsAfterRelease: z.number().nullable(),
    })
    .nullable()
    .default(null),
  final: viewSchema,
  ms: z.number(),
});
export type GuestResult = z.infer<typeof guestResultSchema>;

const sandboxRunSchema = z.object({
  name: z.string(),
  args: z.array(z.string()),
  variant: z.object({
    set: z.record(z.string(), z.string()).optional(),
    unset: z.array(z.string()).optional(),
  }),
  /** The unit the run was started as (the packaged one's options, ExecStart replaced). */
  unit: z.string(),
  reload: z.number().nullable(),
  start: z.object({ code: z.number().nullable(), stderr: z.string() }),
  /** systemd's Result= and ExecMainStatus= of the run: the agent's exit status. */
  result: z.string().nullable(),
  status: z.number().nullable(),
  stdout: z.string(),
  stderr: z.string(),
  vfioLoadedBefore: z.boolean(),
  vfioLoadedAfter: z.boolean(),
  before: viewSchema,
  after: viewSchema,
  ms: z.number(),
});
export type SandboxRun = z.infer<typeof sandboxRunSchema>;

/** The second part (guest/sandbox.mjs): the agent inside the packaged unit's sandbox. */
export const sandboxResultSchema = z.object({
  ok: z.boolean(),
  error: z.string().nullable(),
  systemd: z.string().nullable(),
  pid1: z.string().nullable().optional(),
  device: z.string().optional(),
  runs: z.array(sandboxRunSchema),
  /** The packaged unit itself running the daemon (no server listening). */
  daemon: z
    .object({
      reload: z.number().nullable(),
      start: z.object({ code: z.number().nullable(), stderr: z.string() }),
      running: z.record(z.string(), z.string()),
      stateDirMode: z.string(),
      cmdline: z.string(),
      tokenInCmdline: z.boolean(),
      environHasToken: z.boolean(),
      stop: z.object({ code: z.number().nullable(), stderr: z.string() }),
      stopped: z.record(z.string(), z.string()),
      log: z.string(),
    })
    .optional(),
  ms: z.number(),
});
export type SandboxResult = z.infer<typeof sandboxResultSchema>;

const BEGIN = '===KT-RESULT-BEGIN===';
const END = '===KT-RESULT-END===';
const SANDBOX_BEGIN = '===KT-SANDBOX-BEGIN===';
const SANDBOX_END = '===KT-SANDBOX-END===';

export interface Boot {
  result: GuestResult;
  /** The systemd part's result, or why there is none (the first part's tests still run). */
  sandbox: SandboxResult | string;
  console: string;
  work: string;
  /** Seconds: image build (cached or not) and the guest's run, as boot-guest.sh measured them. */
  log: string;
  wallMs: number;
}

function tail(text: string, lines: number): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** The base64 document between two markers, decoded; null when the markers are not there. */
function between(clean: string, beginMarker: string, endMarker: string): unknown {
  const begin = clean.indexOf(beginMarker);
  const end = clean.indexOf(endMarker, begin + beginMarker.length);
  if (begin < 0 || end < 0) return null;
  const base64 = clean
    .slice(begin + beginMarker.length, end)
    .split('\n')
    .map((l) => l.trim())
    // Kernel lines (emergencies only, see init.sh) could still land between the result lines.
    .filter((l) => /^[A-Za-z0-9+/=]+$/.test(l))
    .join('');
  return JSON.parse(Buffer.from(base64, 'base64').toString('utf8'));
}

/** The systemd part's result, or a message saying why there is none, with the console's tail. */
export function parseSandbox(consoleText: string): SandboxResult | string {
  const clean = consoleText.replaceAll('\r', '');
  const from = clean.indexOf(END);
  const json = between(clean, SANDBOX_BEGIN, SANDBOX_END);
  const rest = from < 0 ? clean : clean.slice(from);
  if (json === null) {
    return `the guest printed no sandbox result (systemd part); console after the first part:\n${tail(rest, 60)}`;
  }
  const parsed = sandboxResultSchema.safeParse(json);
  if (!parsed.success) {
    const error = typeof json === 'object' && json !== null ? Reflect.get(json, 'error') : null;
    return `the sandbox result is incomplete: ${String(error ?? parsed.error.message)}\n${tail(rest, 60)}`;
  }
  return parsed.data;
}

/** The result between the markers; throws with the console's tail when it is not there. */
export function parseConsole(consoleText: string, context: string): GuestResult {
  const clean = consoleText.replaceAll('\r', '');
  const json = between(clean, BEGIN, END);
  if (json === null) {
    throw new Error(
      `the guest printed no result (${context}); last console lines:\n${tail(clean, 60)}`,
    );
  }
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
      sandbox: parseSandbox(text),
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
  return {
    result,
    sandbox: parseSandbox(text),
    console: text,
    work,
    log: `${run.stderr}`,
    wallMs: Date.now() - started,
  };
}
