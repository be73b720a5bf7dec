// Attacks on the login, against a real server process (main.ts): a tRPC batch of guesses, many
// parallel guesses racing the limit, and a flood of logins that used to fill libuv's threadpool
// with scrypt work until a real login and file downloads waited seconds. Each "client" has a
// loopback address of its own (127.0.0.x), so the per-address limit is exercised as well.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_BATCH_CALLS } from '../src/api/limits';
import { FAKE_EXECUTABLE, writeFakeDist } from './helpers/fake-dist';
import { drivers } from './helpers/harness';
import {
  httpRequest,
  type RawResponse,
  type ServerProcess,
  startServerProcess,
} from './helpers/server-process';

const PASSWORD = 'correct horse battery staple';

interface TrpcAnswer {
  result?: { data?: unknown };
  error?: { message: string; data?: { code?: string; httpStatus?: number } };
}

function answers(res: RawResponse): TrpcAnswer[] {
  const parsed = JSON.parse(res.body) as TrpcAnswer | TrpcAnswer[];
  return Array.isArray(parsed) ? parsed : [parsed];
}

const codeOf = (res: RawResponse) => answers(res)[0]?.error?.data?.code ?? 'OK';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-login-attacks-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('login attacks on a real server process (%s)', (driver) => {
  let server: ServerProcess;

  beforeAll(async () => {
    const dist = await writeFakeDist(path.join(tmp, driver, 'dist'));
    server = await startServerProcess(driver, {
      ADMIN_PASSWORD: PASSWORD,
      VFIO_FLEET_DOWNLOADS_DIR: dist.dir,
    });
  }, 90_000);
  afterAll(async () => {
    await server?.close();
  });

  const login = (username: string, password: string, from?: string) =>
    httpRequest(`${server.url}/api/trpc/auth.login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username, password }),
      from,
    });

  it('refuses a batch of logins, even one holding the right password, before hashing any', async () => {
    const guesses = [
      ...Array.from({ length: 40 }, (_, i) => ({ username: 'admin', password: `guess-${i}` })),
      { username: 'admin', password: PASSWORD },
    ];
    const res = await httpRequest(
      `${server.url}/api/trpc/${guesses.map(() => 'auth.login').join(',')}?batch=1`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(Object.fromEntries(guesses.map((g, i) => [i, g]))),
        from: '127.0.0.2',
      },
    );
    expect(res.headers['set-cookie'], res.body).toBeUndefined();
    expect(res.status).toBe(400);
    const each = answers(res);
    expect(each).toHaveLength(guesses.length);
    for (const answer of each) {
      expect(answer.error?.data?.code).toBe('BAD_REQUEST');
      expect(answer.error?.message).toMatch(/auth\.login must be called on its own/);
    }
    // Nothing was counted: the right password alone, from the same address, still logs in.
    const alone = await login('admin', PASSWORD, '127.0.0.2');
    expect(alone.status, alone.body).toBe(200);
    expect(alone.headers['set-cookie']?.[0]).toMatch(/^vfio_fleet_session=/);
  });

  it(`refuses a batch of more than ${MAX_BATCH_CALLS} calls`, async () => {
    const paths = Array.from({ length: MAX_BATCH_CALLS + 1 }, () => 'auth.me').join(',');
    const res = await httpRequest(`${server.url}/api/trpc/${paths}?batch=1&input={}`);
    expect(res.status).toBe(400);
    expect(answers(res)[0]?.error?.message).toBe(
      `a batch holds at most ${MAX_BATCH_CALLS} calls; this one has ${MAX_BATCH_CALLS + 1}`,
    );
  });

  it('counts parallel wrong logins before hashing them: 30 at once get 5 verdicts, 25 refusals', async () => {
    const username = `race-${randomBytes(4).toString('hex')}`;
    // One address each, so only the per-username limit (5) applies.
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => login(username, `guess-${i}`, `127.0.1.${i + 1}`)),
    );
    const codes = results.map(codeOf);
    expect(codes.filter((c) => c === 'UNAUTHORIZED')).toHaveLength(5);
    expect(codes.filter((c) => c === 'TOO_MANY_REQUESTS')).toHaveLength(25);
    const limited = results.find((r) => r.status === 429);
    expect(limited?.headers['retry-after']).toMatch(/^\d+$/);
  });

  /**
   * How long one wrong login takes on this machine right now, unflooded (the median of three, after
   * one that also makes the server's dummy hash): the unit the timings below are bounded in, since
   * a busy 2-core CI machine stretches every request alike.
   */
  async function loginUnitMs(): Promise<number> {
    const times: number[] = [];
    for (let i = 0; i < 4; i += 1) {
      const res = await login(
        `unit-${randomBytes(4).toString('hex')}`,
        'wrong',
        `127.0.3.${i + 1}`,
      );
      expect(codeOf(res)).toBe('UNAUTHORIZED');
      times.push(res.ms);
    }
    return times.slice(1).sort((a, b) => a - b)[1] ?? 0;
  }

  it('keeps a real login, /api/health and a download fast while one address floods logins', async () => {
    const unit = await loginUnitMs();
    const flood = Array.from({ length: 200 }, (_, i) =>
      login(`flood-${i}`, 'not the password', '127.0.0.5'),
    );
    // Let the flood reach the server first.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const [health, download, real] = await Promise.all([
      httpRequest(`${server.url}/api/health`),
      httpRequest(`${server.url}/downloads/${FAKE_EXECUTABLE}`),
      login('admin', PASSWORD, '127.0.0.1'),
    ]);
    const flooded = await Promise.all(flood);
    expect(health.status).toBe(200);
    expect(download.status).toBe(200);
    expect(real.status, real.body).toBe(200);
    // Every attempt was answered: a few checked and wrong, the rest refused without a hash.
    const codes = flooded.map(codeOf);
    expect(codes.every((c) => c === 'UNAUTHORIZED' || c === 'TOO_MANY_REQUESTS')).toBe(true);
    expect(codes.filter((c) => c === 'UNAUTHORIZED').length).toBeLessThanOrEqual(50);
    // Before the fix all 200 were hashed first, 4 at a time: these waited for 50 rounds of hashing
    // on a crowded CPU. Now the real login waits for at most the flood's few attempts in flight and
    // the others for no hash; the rest is the cost of 200 requests on a 2-core machine.
    const took = `one login alone ${unit} ms; health ${health.ms} ms, download ${download.ms} ms, login ${real.ms} ms`;
    expect(Math.max(health.ms, download.ms), took).toBeLessThan(20 * unit + 1_000);
    expect(real.ms, took).toBeLessThan(30 * unit + 1_000);
  });

  it('bounds hashing server-wide: many addresses flooding get quick answers, downloads stay fast', async () => {
    const unit = await loginUnitMs();
    const flood = Array.from({ length: 160 }, (_, i) =>
      login(`wide-${i}`, 'not the password', `127.0.2.${(i % 16) + 1}`),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const download = await httpRequest(`${server.url}/downloads/${FAKE_EXECUTABLE}`);
    const flooded = await Promise.all(flood);
    expect(download.status).toBe(200);
    const codes = flooded.map(codeOf);
    expect(codes.every((c) => c === 'UNAUTHORIZED' || c === 'TOO_MANY_REQUESTS')).toBe(true);
    // A busy server says so at once rather than queueing every attempt behind the others.
    const busy = flooded.filter((r) => answers(r)[0]?.error?.message.includes('busy'));
    expect(busy.length).toBeGreaterThan(0);
    // The longest wait is the hashing queue's (16 behind the one running), not the whole flood's
    // (before the fix, and the download waited behind it too).
    const slowest = Math.max(...flooded.map((r) => r.ms));
    const took = `one login alone ${unit} ms; download ${download.ms} ms, slowest login ${slowest} ms`;
    expect(download.ms, took).toBeLessThan(20 * unit + 1_000);
    expect(slowest, took).toBeLessThan(60 * unit + 2_000);
  });
});
