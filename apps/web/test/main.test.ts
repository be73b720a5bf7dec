// The entry point as a real process: env parsing, migrations on start, /api/health, and a clean
// exit on SIGTERM. PGlite in a temporary data directory (main reads the same env a user sets).
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseServerEnv } from '../src/env';
import { ServerError } from '../src/errors';
import type { Health } from '../src/server';
import { poll } from './helpers/harness';

const webDir = path.resolve(import.meta.dirname, '..');
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-main-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function startMain(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
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

describe('main.ts', () => {
  it('migrates, serves /api/health and exits 0 on SIGTERM', async () => {
    const { child, output } = startMain({
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_DATA_DIR: path.join(tmp, 'data'),
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const url = await poll(() => /"url":"(http:[^"]+)"/.exec(output())?.[1], 30_000);
      expect(url, output()).toBeDefined();
      const res = await fetch(`${url}/api/health`);
      expect(res.status).toBe(200);
      expect((await res.json()) as Health).toEqual({
        ok: true,
        database: 'up',
        hosts: { online: 0, offline: 0 },
        agents: 0,
      });
      child.kill('SIGTERM');
      expect(await exited, output()).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('exits 1 with a clear message on a bad environment', async () => {
    const { child, output } = startMain({ PORT: 'eighty' });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    expect(output()).toContain('PORT');
  });

  it('parses the environment with defaults', () => {
    expect(parseServerEnv({})).toEqual({
      PORT: 3000,
      HOST: '0.0.0.0',
      VFIO_FLEET_LOG_LEVEL: 'info',
      VFIO_FLEET_HEARTBEAT_SECONDS: 30,
    });
    expect(() => parseServerEnv({ VFIO_FLEET_HEARTBEAT_SECONDS: '0' })).toThrow(ServerError);
  });
});
