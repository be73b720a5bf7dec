/**
 * The real KernelIo: sysfs attribute writes under the agent's root and modprobe on the live host.
 * Everything here runs as root, so every input is checked before it reaches the filesystem or a
 * process: paths must be canonical and under /sys/, module names must be module names, and no
 * string ever goes through a shell.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import path from 'node:path';
import { isKernelErrno, type KernelErrno, type KernelIo, KernelIoError } from '@vfio-fleet/core';
import { HostFs } from '../host-fs';
import { describeStuckWrite, stuckWrites, writeAddress } from './stuck-writes';
import { selfWriterCommand, type WriterCommand, WriterPool } from './writer-pool';

export interface SysfsKernelIoOptions {
  /** The modprobe binary; default `modprobe` from PATH. */
  modprobePath?: string;
  /** A module whose init hangs (a stuck probe) must not hang the agent; default 60 s. */
  modprobeTimeoutMs?: number;
  /** A write not answered by then is stuck in the kernel (default 30 s; writeWithin overrides). */
  writeDeadlineMs?: number;
  /** How to re-run the agent as its writer child; default the running agent itself. */
  writer?: WriterCommand;
  /** Default SIGKILL; see WriterPoolOptions. */
  abandonSignal?: NodeJS.Signals | null;
}

/** A KernelIo whose writes enforce their own deadline and record the ones stuck in the kernel. */
export interface DeadlineKernelIo extends KernelIo {
  writeWithin(path: string, value: string, deadlineMs: number): Promise<void>;
}

export function hasWriteDeadline(io: KernelIo): io is DeadlineKernelIo {
  return 'writeWithin' in io && typeof io.writeWithin === 'function';
}

/** A held device's lock is free within microseconds unless a write holds it: a short wait. */
export const LOCKED_READ_DEADLINE_MS = 2000;

/** The scan's reader of held devices' lock-taking attributes; none for the kernel model. */
export function lockedReaderFor(
  io: KernelIo | null,
  deadlineMs = LOCKED_READ_DEADLINE_MS,
): ((hostPath: string) => Promise<string | null>) | undefined {
  if (!(io instanceof SysfsKernelIo)) return undefined;
  return (hostPath) => io.readGuarded(hostPath, deadlineMs);
}

/** Module names as the kernel allows them (MODULE_NAME_LEN - 1 = 55 on 64-bit). */
const MODULE_NAME = /^[A-Za-z0-9_-]{1,55}$/;

/** strerror texts modprobe prints after "could not insert '<m>': ". */
const STRERROR_TO_ERRNO: ReadonlyArray<[string, KernelErrno]> = [
  ['not found in directory', 'ENOENT'],
  ['Operation not permitted', 'EPERM'],
  ['Permission denied', 'EACCES'],
  ['Device or resource busy', 'EBUSY'],
  ['No such device', 'ENODEV'],
  ['Invalid argument', 'EINVAL'],
  ['Input/output error', 'EIO'],
  ['Cannot allocate memory', 'ENOMEM'],
  ['File exists', 'EEXIST'],
  ['Connection timed out', 'ETIMEDOUT'],
  ['Read-only file system', 'EROFS'],
  ['No such file or directory', 'ENOENT'],
];

/**
 * O_WRONLY|O_TRUNC: what `w` opens with, minus O_CREAT. sysfs cannot create attributes, and a
 * missing one must fail with ENOENT rather than leave a stray file in a captured or fixture tree.
 * Never O_RDWR: kernfs refuses read access to write-only attributes like `bind` and `unbind`.
 */
const WRITE_FLAGS = constants.O_WRONLY | constants.O_TRUNC;

export class SysfsKernelIo implements DeadlineKernelIo {
  private readonly root: string;
  private readonly fs: HostFs;
  private readonly modprobePath: string;
  private readonly modprobeTimeoutMs: number;
  private readonly writeDeadlineMs: number;
  private readonly options: SysfsKernelIoOptions;
  private pool: WriterPool | null = null;

  constructor(root: string, options: SysfsKernelIoOptions = {}) {
    this.root = path.resolve(root);
    this.fs = new HostFs(this.root);
    this.modprobePath = options.modprobePath ?? 'modprobe';
    this.modprobeTimeoutMs = options.modprobeTimeoutMs ?? 60_000;
    this.writeDeadlineMs = options.writeDeadlineMs ?? 30_000;
    this.options = options;
  }

  write(hostPath: string, value: string): Promise<void> {
    return this.writeWithin(hostPath, value, this.writeDeadlineMs);
  }

  /**
   * One open(2) and one write(2) in the writer child: a sysfs store() sees exactly one buffer per
   * call, so a value split across writes would be two stores (two binds of half an address).
   */
  async writeWithin(hostPath: string, value: string, deadlineMs: number): Promise<void> {
    checkSysPath(hostPath);
    const address = writeAddress(hostPath, value);
    const stuck = address === null ? null : stuckWrites.forDevice(this.root, address);
    if (stuck !== null) {
      throw new KernelIoError(
        'EBUSY',
        hostPath,
        `refusing to write ${hostPath}: ${describeStuckWrite(stuck)} is stuck in the kernel on ${address}`,
      );
    }
    const file = await this.locate(hostPath);
    const data = Buffer.from(value, 'utf8');
    const answer = await this.writers().write({
      hostPath,
      address,
      file,
      flags: this.flags(),
      value,
      deadlineMs,
    });
    if (answer.kind === 'error') throw ioError(answer, hostPath);
    if (answer.kind === 'done' && answer.bytesWritten !== data.length) {
      throw new KernelIoError(
        'EIO',
        hostPath,
        `${hostPath}: the kernel took ${answer.bytesWritten} of ${data.length} bytes`,
      );
    }
  }

  /**
   * Reads a lock-taking attribute (driver_override, sriov_numvfs) in the writer child: while
   * another process's write to the device is blocked in the kernel, such a read blocks too, and
   * in-process it would freeze the scan. Null for a missing or unreadable attribute; rejects with
   * ETIMEDOUT (the device then counts as stuck) when the read does not return within the deadline.
   */
  async readGuarded(hostPath: string, deadlineMs: number): Promise<string | null> {
    checkSysPath(hostPath);
    const address = writeAddress(hostPath, '');
    const file = await this.locate(hostPath).catch(() => null);
    if (file === null) return null;
    const answer = await this.writers().write({
      op: 'read',
      hostPath,
      address,
      file,
      flags:
        constants.O_RDONLY | (this.root === path.parse(this.root).root ? 0 : constants.O_NOFOLLOW),
      value: '',
      deadlineMs,
    });
    // As HostFs.readAttr: the first line, trimmed.
    return answer.kind === 'text' ? (answer.text.split('\n', 1)[0]?.trim() ?? '') : null;
  }

  /** Ends the idle writer child (a daemon's stop); a later write starts another. */
  close(): void {
    this.pool?.close();
  }

  private writers(): WriterPool {
    this.pool ??= new WriterPool({
      command: this.options.writer ?? selfWriterCommand(),
      registry: stuckWrites,
      root: this.root,
      ...(this.options.abandonSignal === undefined
        ? {}
        : { abandonSignal: this.options.abandonSignal }),
    });
    return this.pool;
  }

  /**
   * Where to open `hostPath`. On the live host the kernel's own lookup stays in sysfs. Under
   * another root (a capture, a fixture) links are followed inside the root like HostFs does, and
   * what they lead to must still be under /sys/, so a planted link cannot make a root-run agent
   * write /etc/shadow; O_NOFOLLOW then keeps the last component from being swapped for a link.
   */
  private async locate(hostPath: string): Promise<string> {
    if (this.root === path.parse(this.root).root) return hostPath;
    const resolved = await this.fs.resolve(hostPath);
    if (resolved === null || !resolved.startsWith('/sys/')) {
      throw new KernelIoError(
        'EINVAL',
        hostPath,
        `refusing to write ${hostPath}: its links lead to ${resolved ?? 'a loop'}, outside /sys/`,
      );
    }
    return this.fs.hostPath(resolved);
  }

  private flags(): number {
    return this.root === path.parse(this.root).root
      ? WRITE_FLAGS
      : WRITE_FLAGS | constants.O_NOFOLLOW;
  }

  async modprobe(module: string): Promise<void> {
    const target = `modprobe ${module}`;
    // A leading `-` would reach modprobe as an option (`-r` removes a module).
    if (!MODULE_NAME.test(module) || module.startsWith('-')) {
      throw new KernelIoError(
        'EINVAL',
        target,
        `refusing to run modprobe with ${JSON.stringify(module)}: not a module name`,
      );
    }
    if (this.root !== path.parse(this.root).root) {
      // A module loads into the running kernel, whatever tree the agent reads: never on a copy.
      throw new KernelIoError(
        'EPERM',
        target,
        `modprobe needs the live host (the agent's root is ${this.root}, not /)`,
      );
    }
    await new Promise<void>((resolve, reject) => {
      execFile(
        this.modprobePath,
        [module],
        { timeout: this.modprobeTimeoutMs, killSignal: 'SIGKILL', encoding: 'utf8' },
        (error, _stdout, stderr) => {
          if (error === null) return resolve();
          reject(modprobeError(error, stderr, target, this.modprobePath, this.modprobeTimeoutMs));
        },
      );
    });
  }
}

/** Absolute, canonical (no `.`, `..` or `//`) and under /sys/: nothing else is written. */
function checkSysPath(hostPath: string): void {
  const canonical =
    hostPath.startsWith('/sys/') &&
    !hostPath.includes('\0') &&
    path.posix.normalize(hostPath) === hostPath &&
    !hostPath.endsWith('/');
  if (!canonical) {
    throw new KernelIoError(
      'EINVAL',
      hostPath,
      `refusing to write ${JSON.stringify(hostPath)}: only canonical paths under /sys/ are written`,
    );
  }
}

function errnoCode(error: unknown): string | null {
  if (typeof error !== 'object' || error === null) return null;
  const code: unknown = Reflect.get(error, 'code');
  return typeof code === 'string' ? code : null;
}

/**
 * Why sysfs can be read-only for a root process, measured on a real kernel (kernel-test's systemd
 * part): the operator's fix, since the driver core itself never answers EROFS.
 */
const EROFS_HINT =
  'sysfs is mounted read-only for this agent: under systemd the unit needs ' +
  'ReadWritePaths=/sys/bus/pci /sys/devices beside ProtectKernelTunables=yes (both paths: ' +
  'devices/<address>/ links resolve into /sys/devices); in a container, /sys must be mounted ' +
  'read-write';

function ioError(error: { code: string | null; message: string }, hostPath: string): KernelIoError {
  const code = error.code;
  const errno: KernelErrno = isKernelErrno(code) ? code : 'EUNKNOWN';
  const detail = error.message;
  const hint = errno === 'EROFS' ? ` (${EROFS_HINT})` : '';
  return new KernelIoError(errno, hostPath, `${hostPath}: ${detail}${hint}`);
}

function modprobeError(
  error: Error,
  stderr: string,
  target: string,
  modprobePath: string,
  timeoutMs: number,
): KernelIoError {
  const code = errnoCode(error);
  if (code === 'ENOENT' || code === 'EACCES') {
    return new KernelIoError(code, target, `cannot run ${modprobePath}: ${error.message}`);
  }
  if (Reflect.get(error, 'killed') === true) {
    return new KernelIoError(
      'ETIMEDOUT',
      target,
      `${target} did not finish within ${timeoutMs} ms`,
    );
  }
  const text = stderr.trim();
  const errno = STRERROR_TO_ERRNO.find(([needle]) => text.includes(needle))?.[1] ?? 'EUNKNOWN';
  return new KernelIoError(
    errno,
    target,
    text === '' ? `${target} failed: ${error.message}` : text,
  );
}
