// The server's local state against real server processes (main.ts through tsx), as an attacker or
// a careless operator met it: a data directory any local user could read and write, two servers
// on one PGlite directory, and a local agent that outlived its server's `kill -9` and then ran
// next to the next server's own. PGlite: the data directory is what is at stake.
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { chmod, lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { processAlive } from '@vfio-fleet/local-state';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AGENT_BIN } from '../src/local-agent';
import type { Health } from '../src/server';
import { poll } from './helpers/harness';
import { startMain as startMainProcess } from './helpers/main-process';

/** Each case starts two or three servers, a fresh PGlite database among them: slow on 2 cores. */
const SERVERS_TIMEOUT_MS = 360_000;
/** How long one server may take to listen, or its host to come online (a loaded machine). */
const START_MS = 150_000;
let tmp: string;
const started: number[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-local-state-'));
});
afterEach(() => {
  for (const pid of started.splice(0)) if (processAlive(pid)) process.kill(pid, 'SIGKILL');
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  pid: number;
  output(): string;
  exited: Promise<number | string>;
}

function track(child: ChildProcess): Proc {
  const pid = child.pid ?? 0;
  started.push(pid);
  let output = '';
  const keep = (chunk: string) => {
    output += chunk;
  };
  child.stdout?.setEncoding('utf8').on('data', keep);
  child.stderr?.setEncoding('utf8').on('data', keep);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return { child, pid, output: () => output, exited };
}

/** A server on a free port without the UI, with its local agent unless `env` turns it off. */
function startMain(env: Record<string, string>): Proc {
  const main = startMainProcess({ PORT: '0', HOST: '127.0.0.1', VFIO_FLEET_UI: '0', ...env });
  started.push(main.pid);
  return main;
}

async function urlOf(main: Proc): Promise<string> {
  const url = await poll(() => /"url":"(http:[^"]+)"/.exec(main.output())?.[1], START_MS);
  expect(url, main.output()).toBeDefined();
  return url ?? '';
}

/** Modes under `dir` that give group or other users anything. */
async function openModes(dir: string): Promise<string[]> {
  const open: string[] = [];
  const walk = async (entry: string) => {
    const info = await lstat(entry).catch(() => null);
    if (info === null || info.isSymbolicLink()) return;
    if ((info.mode & 0o077) !== 0) open.push(`${entry} ${(info.mode & 0o777).toString(8)}`);
    if (info.isDirectory()) {
      for (const name of await readdir(entry)) await walk(path.join(entry, name));
    }
  };
  await walk(dir);
  return open;
}

/** What PGlite (and the server before) left: 0755 directories, 0666 files. */
async function loosen(dir: string): Promise<void> {
  const info = await lstat(dir);
  await chmod(dir, info.isDirectory() ? 0o755 : 0o666);
  if (info.isDirectory()) {
    for (const name of await readdir(dir)) await loosen(path.join(dir, name));
  }
}

/** Pids of `vfio-fleet-agent run` processes on `stateDir`, from /proc. */
function agentsOn(stateDir: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (argv.includes(AGENT_BIN) && argv.includes('run') && argv.includes(stateDir)) {
      pids.push(Number(name));
    }
  }
  return pids;
}

describe('the data directory of a real server', () => {
  const name = 'is private from the start, one server at a time, and free again after a kill -9';
  it(name, { timeout: SERVERS_TIMEOUT_MS }, async () => {
    const dataDir = path.join(tmp, 'data');
    const env = { VFIO_FLEET_DATA_DIR: dataDir, VFIO_FLEET_LOCAL_AGENT: '0' };
    const first = startMain(env);
    const url = await urlOf(first);
    expect(await openModes(dataDir)).toEqual([]);

    // A second server on the same directory is refused before it opens anything.
    const second = startMain(env);
    expect(await second.exited, second.output()).toBe(1);
    expect(second.output()).toContain(
      `vfio-fleet server: the PGlite database in ${dataDir} is in use by pid ${first.pid}`,
    );
    expect((await fetch(`${url}/api/health`)).status).toBe(200);

    // Killed outright: its lock is stale, and the next server takes it over. The directory is
    // loosened as an earlier version left it; the next start fixes it and says so.
    first.child.kill('SIGKILL');
    await first.exited;
    await loosen(dataDir);
    const third = startMain(env);
    const thirdUrl = await urlOf(third);
    expect((await fetch(`${thirdUrl}/api/health`)).status).toBe(200);
    expect(third.output()).toMatch(
      new RegExp(`"level":40,.*"msg":"fixed modes of \\d+ files in ${dataDir}: other users`),
    );
    expect(await openModes(dataDir)).toEqual([]);
    third.child.kill('SIGTERM');
    expect(await third.exited, third.output()).toBe(0);
    expect(await openModes(dataDir)).toEqual([]);
  });
});

describe('the local agent of a real server', () => {
  const name =
    'dies with its server on kill -9, and the next server ends an orphan and runs exactly one';
  it(name, { timeout: SERVERS_TIMEOUT_MS }, async () => {
    const root = path.join(tmp, 'host');
    await buildScenario(root, 'dual-gpu');
    const dataDir = path.join(tmp, 'agent-data');
    const stateDir = path.join(dataDir, 'local-agent');
    const env = { VFIO_FLEET_DATA_DIR: dataDir, VFIO_FLEET_LOCAL_AGENT_ROOT: root };
    const online = async (url: string) =>
      poll(async () => {
        const body = (await (await fetch(`${url}/api/health`)).json()) as Health;
        return body.hosts.online === 1 && body.agents === 1 ? body : undefined;
      }, START_MS);

    const first = startMain(env);
    const firstUrl = await urlOf(first);
    expect(await online(firstUrl), first.output()).toBeDefined();
    const agentPid = Number(/"agentPid":(\d+)/.exec(first.output())?.[1]);
    expect(agentsOn(stateDir)).toEqual([agentPid]);
    started.push(agentPid);

    first.child.kill('SIGKILL');
    await first.exited;
    const gone = await poll(() => (processAlive(agentPid) ? undefined : true), 10_000);
    expect(gone, 'the local agent outlived its server').toBe(true);
    expect(await openModes(stateDir)).toEqual([]);

    // An orphan as an older server left it: an agent on the state dir with no server behind it,
    // redialling the dead one.
    const orphan = track(
      spawn(
        process.execPath,
        [AGENT_BIN, 'run', '--server', firstUrl, '--state-dir', stateDir, '--root', root],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
          env: { ...process.env, VFIO_FLEET_LOG_LEVEL: 'info' },
        },
      ),
    );
    await poll(() => (/"msg":"agent starting"/.test(orphan.output()) ? true : undefined), START_MS);
    expect(agentsOn(stateDir)).toEqual([orphan.pid]);

    const second = startMain(env);
    const secondUrl = await urlOf(second);
    expect(await online(secondUrl), second.output()).toBeDefined();
    expect(second.output()).toContain('stopping an orphaned local agent');
    expect(await orphan.exited).toBe(0);
    const secondAgent = Number(/"agentPid":(\d+)/.exec(second.output())?.[1]);
    started.push(secondAgent);
    expect(agentsOn(stateDir)).toEqual([secondAgent]);

    second.child.kill('SIGTERM');
    expect(await second.exited, second.output()).toBe(0);
    expect(agentsOn(stateDir)).toEqual([]);
  });
});
