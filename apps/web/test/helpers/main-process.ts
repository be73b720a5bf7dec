// The server's entry point (src/main.ts through tsx) as a real child process, as a user starts it:
// configured by its environment only. `fdLimit` runs it under `ulimit -n`, so a test can show that a
// leak of file descriptors would exhaust it.
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { poll } from './harness';

const webDir = path.resolve(import.meta.dirname, '../..');

export interface MainProcess {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output: () => string;
}

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
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  return { child, output: () => output };
}

/** The URL the server logs once it listens, or undefined if it does not within `timeoutMs`. */
export function listeningUrl(main: MainProcess, timeoutMs = 30_000): Promise<string | undefined> {
  return poll(() => /"url":"(http:[^"]+)"/.exec(main.output())?.[1], timeoutMs);
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
