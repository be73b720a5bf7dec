// The server's entry point (src/main.ts through tsx) as a real child process, as a user starts it:
// configured by its environment only. For tests whose effect is on the process itself (its file
// descriptors, its memory, its event loop, its files) or that measure it from outside.
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { poll } from './harness';

const webDir = path.resolve(import.meta.dirname, '../..');

/** A server on a free loopback port with neither the UI nor a local agent. */
export const QUIET_SERVER_ENV: Readonly<Record<string, string>> = {
  PORT: '0',
  HOST: '127.0.0.1',
  VFIO_FLEET_LOCAL_AGENT: '0',
  VFIO_FLEET_UI: '0',
};

export interface MainProcess {
  child: ChildProcess;
  pid: number;
  /** stdout and stderr so far (the last 200,000 characters). */
  output(): string;
  /** The exit code, or the signal that ended it. */
  exited: Promise<number | string>;
  /** Resident memory now, from /proc/PID/status (VmRSS); null once the process is gone. */
  rssBytes(): Promise<number | null>;
  /**
   * Sends `signal` (default SIGKILL) unless it has exited, and waits for the exit; SIGKILL after
   * `graceMs` if it has not gone by then.
   */
  kill(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

/**
 * Starts main.ts with `env` over this process's environment (without its DATABASE_URL: PGlite
 * unless `env` names one). `fdLimit` runs it under `ulimit -n`, so a test can show that a leak of
 * file descriptors would exhaust it.
 */
export function startMain(
  env: Record<string, string>,
  options: { fdLimit?: number } = {},
): MainProcess {
  const node = [process.execPath, '--import', 'tsx', 'src/main.ts'];
  // `exec`, so the child's pid is the server's own.
  const [command, ...args] =
    options.fdLimit === undefined
      ? node
      : ['/bin/sh', '-c', `ulimit -n ${options.fdLimit} && exec "$@"`, 'sh', ...node];
  const child = spawn(command ?? process.execPath, args, {
    cwd: webDir,
    env: { ...process.env, DATABASE_URL: '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: string) => {
    output = (output + chunk).slice(-200_000);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const pid = child.pid ?? 0;
  return {
    child,
    pid,
    output: () => output,
    exited,
    async rssBytes() {
      try {
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
        return kb === undefined ? null : Number(kb) * 1024;
      } catch {
        return null;
      }
    },
    async kill(signal = 'SIGKILL', graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The URL the server logs once it listens, or undefined if it does not within `timeoutMs`. */
export function listeningUrl(main: MainProcess, timeoutMs = 30_000): Promise<string | undefined> {
  return poll(() => /"url":"(http:[^"]+)"/.exec(main.output())?.[1], timeoutMs);
}

/**
 * A quiet server (QUIET_SERVER_ENV, then `env`) that listens: its URL, or an error with its
 * output. Migrations and PGlite's start take a while on a busy machine.
 */
export async function startMainProcess(
  env: Record<string, string>,
  timeoutMs = 120_000,
): Promise<MainProcess & { url: string }> {
  const main = startMain({ ...QUIET_SERVER_ENV, ...env });
  const url = await listeningUrl(main, timeoutMs);
  if (url === undefined) {
    await main.kill();
    throw new Error(`the server did not start:\n${main.output()}`);
  }
  return { ...main, url };
}

/** How many of process `pid`'s file descriptors are sockets. */
export function socketCount(pid: number): number {
  const dir = `/proc/${pid}/fd`;
  let count = 0;
  for (const fd of readdirSync(dir)) {
    try {
      if (readlinkSync(path.join(dir, fd)).startsWith('socket:')) count += 1;
    } catch {
      // Closed between the listing and the readlink.
    }
  }
  return count;
}

/** TCP connections on local `port` in CLOSE_WAIT (the peer left, this side never closed). */
export function closeWaitCount(port: number): number {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  let count = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 08 is CLOSE_WAIT.
      if (fields[1]?.endsWith(`:${portHex}`) && fields[3] === '08') count += 1;
    }
  }
  return count;
}

/**
 * Times GET /api/health every 50 ms and samples the server's RSS, from a process of its own: the
 * test's own event loop (busy sending megabytes of frames) must not count as the server's lag.
 */
const PROBE = `
const [url, pid] = process.argv.slice(1);
const fs = require('node:fs');
let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
const rss = () => {
  try { return Number(/^VmRSS:\\s+(\\d+) kB$/m.exec(fs.readFileSync('/proc/' + pid + '/status', 'utf8'))[1]) * 1024; }
  catch { return null; }
};
(async () => {
  while (!stopping) {
    const started = performance.now();
    const status = await fetch(url, { signal: AbortSignal.timeout(30000) })
      .then((res) => res.arrayBuffer().then(() => res.status)).catch(() => null);
    const ms = status === null ? null : performance.now() - started;
    process.stdout.write(JSON.stringify({ ms, status, rss: rss() }) + '\\n');
    if (status === null) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  process.exit(0);
})();
`;

export interface ProbeResult {
  /** Each probe's latency; Infinity for one that got no answer (in 30 s, or a network error). */
  latenciesMs: number[];
  /** Each probe's HTTP status (503: the database did not answer within the health deadline). */
  statuses: (number | null)[];
  peakRssBytes: number;
}

export function startHealthProbe(server: MainProcess & { url: string }): {
  stop(): Promise<ProbeResult>;
} {
  const child = spawn(
    process.execPath,
    ['-e', PROBE, `${server.url}/api/health`, String(server.pid)],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      const samples = out
        .split('\n')
        .filter((line) => line !== '')
        .map(
          (line) =>
            JSON.parse(line) as { ms: number | null; status: number | null; rss: number | null },
        );
      return {
        latenciesMs: samples.map((s) => s.ms ?? Number.POSITIVE_INFINITY),
        statuses: samples.map((s) => s.status),
        peakRssBytes: Math.max(0, ...samples.map((s) => s.rss ?? 0)),
      };
    },
  };
}
