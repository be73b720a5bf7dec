// The real server as its own process (`src/main.ts` through tsx, as an operator starts it), for
// tests that measure it from outside: its memory from /proc, its responsiveness over HTTP.
import { type ChildProcess, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { poll } from './harness';

const webDir = path.resolve(import.meta.dirname, '../..');

export interface MainProcess {
  child: ChildProcess;
  pid: number;
  /** http://127.0.0.1:PORT */
  url: string;
  output(): string;
  /** Resident memory now, from /proc/PID/status (VmRSS); null once the process is gone. */
  rssBytes(): Promise<number | null>;
  kill(): Promise<void>;
}

/** Starts main.ts with `env` over a clean environment of the test's own (no DATABASE_URL). */
export async function startMainProcess(env: Record<string, string>): Promise<MainProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: webDir,
    env: {
      ...process.env,
      DATABASE_URL: '',
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_LOCAL_AGENT: '0',
      VFIO_FLEET_UI: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const { pid } = child;
  if (pid === undefined) throw new Error('could not start src/main.ts');
  let output = '';
  const keep = (chunk: string) => {
    output = (output + chunk).slice(-200_000);
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = () => child.exitCode === null && child.signalCode === null;
  // Migrations and PGlite's start take a while on a busy machine.
  const url = await poll(() => /"url":"(http:[^"]+)"/.exec(output)?.[1], 120_000);
  if (url === undefined) {
    if (running()) child.kill('SIGKILL');
    throw new Error(`the server did not start:\n${output}`);
  }
  return {
    child,
    pid,
    url,
    output: () => output,
    async rssBytes() {
      try {
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
        return kb === undefined ? null : Number(kb) * 1024;
      } catch {
        return null;
      }
    },
    async kill() {
      if (running()) child.kill('SIGKILL');
      await exited;
    },
  };
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

export function startHealthProbe(server: MainProcess): { stop(): Promise<ProbeResult> } {
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
