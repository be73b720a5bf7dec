// Next.js inside the one server process: the real server (port 0) with Next's production handler
// serves the page, while the tRPC API and the agents' WebSocket keep working on the same port; and
// every kind of response carries the security headers, pages a CSP nonce of their own.
// Uses the existing `next build` output (the package's build script, run by `npm install`) and
// builds once when there is none.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hosts, users } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { createNextHandler, hasNextBuild, type NextApp, WEB_DIR } from '../src/next-handler';
import { apiClient } from './helpers/api-client';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  startAgent,
  startFleet,
} from './helpers/harness';
import { rawRequest } from './helpers/raw-http';

let tmp: string;
let ui: NextApp;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-next-'));
  if (!hasNextBuild()) {
    const nextBin = createRequire(import.meta.url).resolve('next/dist/bin/next');
    execFileSync(process.execPath, [nextBin, 'build'], {
      cwd: WEB_DIR,
      env: { ...process.env, NEXT_TELEMETRY_DISABLED: '1' },
      stdio: 'ignore',
      timeout: 280_000,
    });
  }
  ui = await createNextHandler();
}, 300_000);
afterAll(async () => {
  await ui?.close();
  await rm(tmp, { recursive: true, force: true });
});

describe.each(drivers)('Next.js on the server port (%s)', (driver) => {
  let fleet: Fleet;
  let agent: AgentProcess | undefined;
  beforeAll(async () => {
    fleet = await startFleet(driver, { next: ui.handle });
  });
  afterAll(async () => {
    await agent?.kill();
    await fleet?.close();
  });

  it('serves the page at /, and Next 404s for unknown paths', async () => {
    const res = await fetch(`${fleet.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/text\/html/);
    const html = await res.text();
    expect(html).toContain('vfio-fleet');
    // The sign-in page is rendered by Next too (the dashboard pages render after sign-in).
    const login = await fetch(`${fleet.url}/login`);
    expect(login.status).toBe(200);
    expect(await login.text()).toContain('Sign in');
    expect((await fetch(`${fleet.url}/no-such-page`)).status).toBe(404);
  });

  it('answers every upgrade itself once Next has served pages (Next listens on a server of its own)', async () => {
    expect((await fetch(`${fleet.url}/`)).status).toBe(200);
    const { port } = new URL(fleet.url);
    for (const target of ['/', '/login', '/_next/webpack-hmr', '/no-such-page']) {
      const answer = await new Promise<{ text: string; closed: boolean }>((resolve) => {
        let text = '';
        const socket = connect(Number(port), '127.0.0.1', () =>
          socket.write(
            `GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
          ),
        );
        const timer = setTimeout(() => {
          socket.destroy();
          resolve({ text, closed: false });
        }, 5_000);
        socket.setEncoding('latin1').on('data', (chunk: string) => {
          text += chunk;
        });
        socket.on('error', () => undefined);
        socket.on('close', () => {
          clearTimeout(timer);
          resolve({ text, closed: true });
        });
      });
      expect(answer.text, target).toMatch(/^HTTP\/1\.1 404 /);
      expect(answer.closed, target).toBe(true);
    }
  });

  it('sends the security headers on every kind of response, and each page a nonce of its own', async () => {
    const responses: [string, Response][] = [];
    const get = async (path: string, init?: RequestInit) => {
      const res = await fetch(`${fleet.url}${path}`, init);
      responses.push([`${init?.method ?? 'GET'} ${path} ${res.status}`, res]);
      return res;
    };
    await get('/api/health');
    await get('/metrics');
    await get('/downloads/manifest.json');
    await get('/install.sh');
    await get('/api/trpc/auth.me');
    await get('/api/trpc/no.such.procedure');
    await get('/api/trpc/auth.logout', {
      method: 'POST',
      headers: { origin: 'https://evil.example', 'content-type': 'application/json' },
    });
    await get('/no-such-page');
    await get('/login');
    // A client's own CSP header must not choose the nonce.
    const home = await get('/', {
      headers: { 'content-security-policy': "script-src 'nonce-chosen-by-the-client'" },
    });
    const html = await home.text();
    const asset = /<script[^>]* src="(\/_next\/static\/[^"]+)"/.exec(html)?.[1];
    expect(asset, 'a script of the page').toBeDefined();
    await get(asset ?? '/_next/static/missing.js');
    for (const [what, res] of responses) {
      expect(res.headers.get('x-content-type-options'), what).toBe('nosniff');
      expect(res.headers.get('x-frame-options'), what).toBe('DENY');
      expect(res.headers.get('referrer-policy'), what).toBe('same-origin');
      const policy = res.headers.get('content-security-policy') ?? '';
      expect(policy, what).toContain("frame-ancestors 'none'");
      expect(policy, what).toMatch(/default-src 'none'|object-src 'none'/);
      expect(policy, what).toMatch(/base-uri '(self|none)'/);
      expect(policy, what).toMatch(/form-action '(self|none)'/);
    }
    // The page's scripts carry this response's nonce, and the next response has another.
    const nonce = /'nonce-([^']+)'/.exec(home.headers.get('content-security-policy') ?? '')?.[1];
    expect(nonce).toMatch(/^[A-Za-z0-9+/]{22}==$/);
    expect(html).toContain(`nonce="${nonce}"`);
    expect(html).not.toContain('chosen-by-the-client');
    const again = await fetch(`${fleet.url}/`);
    expect(again.headers.get('content-security-policy')).not.toContain(`'nonce-${nonce}'`);
  });

  it("serves no file outside Next's static assets, however the path is spelled", async () => {
    // A real asset first, so the paths below are known to reach Next's file server.
    const html = await (await fetch(`${fleet.url}/login`)).text();
    const asset = /\/_next\/static\/[^"']+\.js/.exec(html)?.[0];
    expect(asset).toBeDefined();
    expect((await rawRequest(fleet.url, 'GET', asset ?? '/')).status).toBe(200);
    // What a traversal would leak (the build id is no secret: every page carries it).
    const secrets = [
      '@vfio-fleet/web',
      'transpilePackages',
      'cacheMaxMemorySize',
      'createNextHandler',
    ];
    for (const p of [
      '/_next/static/../BUILD_ID',
      '/_next/static/..%2fBUILD_ID',
      '/_next/static/..%2f..%2fpackage.json',
      '/_next/static/%2e%2e/%2e%2e/package.json',
      '/_next/static/%2e%2e%2f%2e%2e%2fnext.config.ts',
      '/_next/static/..%5c..%5cpackage.json',
      '/_next/static/..%252f..%252fpackage.json',
      '/_next/static/chunks/..%2f..%2frequired-server-files.json',
      '/_next/static/chunks/..%2f..%2f..%2fsrc%2fnext-handler.ts',
      '/_next/../package.json',
      '/.next/BUILD_ID',
      '/package.json',
      '/src/next-handler.ts',
      '/_next/image?url=%2F..%2Fpackage.json&w=64&q=75',
      '/_next/image?url=file%3A%2F%2F%2Fetc%2Fpasswd&w=64&q=75',
    ]) {
      const res = await rawRequest(fleet.url, 'GET', p);
      expect([400, 404], p).toContain(res.status);
      const body = res.body.toString('utf8');
      for (const secret of secrets) expect(body, p).not.toContain(secret);
      expect(body, p).not.toContain('root:x:0:0');
    }
  });

  it('keeps /api/health, /api/trpc and the agents WebSocket on the same port', async () => {
    expect((await fetch(`${fleet.url}/api/health`)).status).toBe(200);

    await fleet.db.insert(users).values({
      username: 'nina',
      role: 'viewer',
      passwordHash: await hashPassword('a long enough password'),
    });
    const client = apiClient(fleet.url);
    await client.api.auth.login.mutate({ username: 'nina', password: 'a long enough password' });
    expect(await client.api.auth.me.query()).toMatchObject({ username: 'nina' });

    const root = path.join(tmp, driver, 'host');
    await buildScenario(root, 'dual-gpu');
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 600, maxUses: 1 });
    agent = startAgent([
      '--server',
      fleet.url,
      '--token',
      token,
      '--simulate',
      root,
      '--state-dir',
      path.join(tmp, driver, 'state'),
    ]);
    const host = await poll(async () => {
      const [row] = await fleet.db.select().from(hosts);
      return row?.lastSeq !== null && row?.lastSeq !== undefined ? row : undefined;
    }, 30_000);
    expect(host?.state).toBe('online');
    const listed = await client.api.hosts.list.query({});
    expect(listed.items.map((h) => h.id)).toEqual([host?.id]);
  });
});
