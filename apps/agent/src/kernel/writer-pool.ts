/**
 * Runs sysfs writes in a child process the agent can abandon. A write blocked in the kernel (a
 * driver's remove() waiting for a VM to close the device) sleeps uninterruptibly and cannot be
 * cancelled: in-process it would take a libuv thread forever, and four of them freeze every file
 * read the agent makes. Here it takes a child; past its deadline the write is recorded as stuck,
 * the child is abandoned (SIGKILL, which takes effect when the write returns) and the next write
 * gets a fresh child. One child does one write at a time, so abandoning it loses no other write.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { isSea } from 'node:sea';
import { KernelIoError } from '@vfio-fleet/core';
import { describeStuckWrite, type StuckWrite, type StuckWrites } from './stuck-writes';
import { WRITER_SUBCOMMAND, type WriterMessage, writerMessageSchema } from './writer-protocol';

/** How to start the agent's own executable; WRITER_SUBCOMMAND is appended. */
export interface WriterCommand {
  command: string;
  args: readonly string[];
}

/** A child that has not said `ready` by then is broken (nothing was written): not a stuck write. */
const START_TIMEOUT_MS = 15_000;

/** The agent itself: the single executable alone, or node with its flags and the bundle. */
export function selfWriterCommand(): WriterCommand {
  if (isSea()) return { command: process.execPath, args: [] };
  const script = process.argv[1];
  if (script === undefined) throw new Error('cannot re-run the agent: no script in process.argv');
  // A debugger's port would clash with the parent's.
  const flags = process.execArgv.filter((flag) => !flag.startsWith('--inspect'));
  return { command: process.execPath, args: [...flags, script] };
}

interface Waiter {
  settle: (message: WriterMessage | Error) => void;
}

class WriterChild {
  readonly process: ChildProcess;
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  private waiter: Waiter | null = null;
  /** The end of what the child printed: why it died, when it did. */
  private stderr = '';

  constructor(command: WriterCommand) {
    // stderr is a pipe, not inherited: a child stuck in the kernel after the CLI exited would
    // otherwise hold the caller's stderr open, and `$(vfio-fleet-agent bind ...)` would hang.
    this.process = spawn(command.command, [...command.args, WRITER_SUBCOMMAND], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // An idle child must not keep a finished CLI alive; it exits when its stdin closes.
    this.process.unref();
    for (const stream of [this.process.stdin, this.process.stdout, this.process.stderr]) {
      if (stream instanceof Socket) stream.unref();
    }
    this.process.stderr?.setEncoding('utf8');
    this.process.stderr?.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    this.process.stdin?.on('error', () => undefined);
    this.exited = new Promise((resolve) => this.process.once('close', () => resolve()));
    let markReady: () => void = () => undefined;
    let failReady: (error: Error) => void = () => undefined;
    this.ready = new Promise((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    this.process.once('error', (error) => {
      failReady(error);
      this.settle(error);
    });
    void this.exited.then(() => {
      const said = this.stderr.trim();
      const error = new Error(
        `the writer process exited (${describeExit(this.process)})${said === '' ? '' : `: ${said}`}`,
      );
      failReady(error);
      this.settle(error);
    });
    if (this.process.stdout === null) throw new Error('writer spawned without a stdout pipe');
    const lines = createInterface({ input: this.process.stdout, crlfDelay: Infinity });
    lines.on('line', (line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        parsed = null;
      }
      const message = writerMessageSchema.safeParse(parsed);
      if (!message.success) return;
      if (message.data.kind === 'ready') markReady();
      else this.settle(message.data);
    });
  }

  /** Sends one request; resolves with its answer, or an Error when the child is gone. */
  send(request: object): Promise<WriterMessage | Error> {
    return new Promise((resolve) => {
      this.waiter = { settle: resolve };
      this.process.stdin?.write(`${JSON.stringify(request)}\n`);
    });
  }

  /** Leaves the child to finish its write alone; it exits as soon as the kernel returns. */
  abandon(signal: NodeJS.Signals | null): void {
    this.waiter = null;
    this.process.stdin?.end();
    if (signal !== null) this.process.kill(signal);
  }

  close(): void {
    this.abandon(null);
  }

  private settle(result: WriterMessage | Error): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.settle(result);
  }
}

export interface WriterPoolOptions {
  command: WriterCommand;
  registry: StuckWrites;
  root: string;
  /**
   * Sent to a child whose write is stuck; default SIGKILL. Tests that block on a FIFO pass null:
   * a FIFO's open is interruptible, unlike a write in D state, which SIGKILL cannot end.
   */
  abandonSignal?: NodeJS.Signals | null;
}

export interface PoolWrite {
  op?: 'write' | 'read';
  hostPath: string;
  address: string | null;
  file: string;
  flags: number;
  value: string;
  deadlineMs: number;
}

export class WriterPool {
  private idle: WriterChild | null = null;
  private nextId = 0;

  constructor(private readonly options: WriterPoolOptions) {}

  /** The child's answer; rejects with ETIMEDOUT when the write (or read) is stuck. */
  async write(request: PoolWrite): Promise<WriterMessage> {
    const child = this.idle ?? this.spawn();
    this.idle = null;
    try {
      await withDeadline(child.ready, START_TIMEOUT_MS);
    } catch (error) {
      child.close();
      const why = error instanceof Error ? error.message : String(error);
      throw new KernelIoError(
        'EIO',
        request.hostPath,
        `${request.hostPath}: nothing ${request.op === 'read' ? 'read' : 'written'}, the writer process did not start: ${why}`,
      );
    }
    const since = new Date().toISOString();
    const answer = child.send({
      id: this.nextId++,
      op: request.op ?? 'write',
      file: request.file,
      flags: request.flags,
      value: request.value,
    });
    const result = await withDeadline(answer, request.deadlineMs).catch(() => null);
    if (result === null) throw this.stuck(child, request, since);
    if (result instanceof Error) {
      throw new KernelIoError(
        'EIO',
        request.hostPath,
        `${request.hostPath}: the write's outcome is unknown: ${result.message}`,
      );
    }
    this.release(child);
    return result;
  }

  /** Ends every idle child; a stuck one stays until the kernel lets its write return. */
  close(): void {
    this.idle?.close();
    this.idle = null;
  }

  private spawn(): WriterChild {
    const child = new WriterChild(this.options.command);
    void child.exited.then(() => {
      if (this.idle === child) this.idle = null;
    });
    return child;
  }

  private release(child: WriterChild): void {
    if (this.idle === null) this.idle = child;
    else child.close();
  }

  private stuck(child: WriterChild, request: PoolWrite, since: string): KernelIoError {
    const write: StuckWrite = {
      root: this.options.root,
      address: request.address,
      path: request.hostPath,
      value: request.value,
      operation: request.op ?? 'write',
      since,
    };
    const clear = this.options.registry.add(write);
    void child.exited.then(clear);
    child.abandon(
      this.options.abandonSignal === undefined ? 'SIGKILL' : this.options.abandonSignal,
    );
    const device = request.address ?? 'the device';
    return new KernelIoError(
      'ETIMEDOUT',
      request.hostPath,
      `${describeStuckWrite(write)} did not return within ${request.deadlineMs} ms: it is stuck in the kernel, and the agent will not touch ${device} until it completes`,
    );
  }
}

function describeExit(child: ChildProcess): string {
  if (child.signalCode !== null) return `signal ${child.signalCode}`;
  return `status ${child.exitCode ?? '?'}`;
}

/** `work`, or a rejection after `ms`. */
async function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
