/**
 * Child processes of the e2e fleet: the real server (`apps/web/src/main.ts` through tsx) and real
 * agents (the agent bundle's `run`), with their output kept for failure messages, and a stop that
 * escalates from SIGTERM to SIGKILL so a hung child never outlives the suite.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import path from 'node:path';

export const repoRoot = path.resolve(import.meta.dirname, '../..');
export const agentBin = path.join(repoRoot, 'apps/agent/bin/vfio-fleet-agent.mjs');
export const serverEntry = path.join(repoRoot, 'apps/web/src/main.ts');

export interface Child {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout and stderr so far (the last 200 kB). */
  output(): string;
  readonly exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code or signal. */
  stop(graceMs?: number): Promise<number | string>;
  kill(): Promise<number | string>;
}

const KEEP = 200_000;

export function spawnChild(
  command: string,
  args: readonly string[],
  options: { cwd: string; env: NodeJS.ProcessEnv },
): Child {
  const child = spawn(command, args, {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`could not start ${command} ${args.join(' ')}`);
  const pid = child.pid;
  let output = '';
  const keep = (chunk: string) => {
    output = (output + chunk).slice(-KEEP);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    pid,
    output: () => output,
    exited,
    async stop(graceMs = 10_000) {
      if (running()) child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (running()) child.kill('SIGKILL');
      }, graceMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
    kill() {
      if (running()) child.kill('SIGKILL');
      return exited;
    },
  };
}

/** The agent bundle's `run` with the given arguments. */
export function startAgentProcess(args: readonly string[]): Child {
  return spawnChild(process.execPath, [agentBin, 'run', ...args], {
    cwd: repoRoot,
    env: { ...process.env, NO_COLOR: '1', VFIO_FLEET_LOG_LEVEL: 'info' },
  });
}

/** `scan --json` of a fixture tree: the agent's own snapshot, the source of expected numbers. */
export function scanJson(root: string, extraArgs: readonly string[] = []): unknown {
  const args = [agentBin, 'scan', '--root', root, '--json', ...extraArgs];
  const out = execFileSync(process.execPath, args, {
    cwd: repoRoot,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out);
}

/** Polls until `check` returns something other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  detail: () => string = () => '',
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastError: unknown = null;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= end) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}\n${detail()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * Records a process a test started, for teardown to stop if the test does not; `marker` is a
 * string its command line contains (a path only it was given).
 */
export function recordPid(file: string, pid: number, marker: string): void {
  appendFileSync(file, `${pid}\t${marker}\n`);
}
