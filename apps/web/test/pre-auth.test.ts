// The port's pre-auth surface against a real server process (src/main.ts, PGlite in a temporary
// directory), as an anonymous attacker reaches it: a flood of upgrade requests to paths nobody
// serves and of junk handshakes to /api/agent, a target `new URL` cannot parse, a WebSocket that
// never says hello and a request that stops mid-headers. Every socket must be answered or closed
// by the server, within its deadline, and the server must keep serving. It runs under a low
// `ulimit -n`, so one descriptor leaked per request would exhaust it.

import { mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { poll } from './helpers/harness';
import {
  closeWaitCount,
  listeningUrl,
  type MainProcess,
  socketCount,
  startMain,
} from './helpers/main-process';

/** The server's defaults (agent-gateway.ts, upgrade.ts): this test uses them as shipped. */
const HELLO_TIMEOUT_MS = 5_000;
const CLOSE_GRACE_MS = 1_000;
const HEADERS_TIMEOUT_MS = 10_000;
const CHECK_INTERVAL_MS = 1_000;
/** Scheduling on a loaded 2-core machine. */
const SLACK_MS = 2_000;

const FD_LIMIT = 256;
const FLOOD = 3_000;
const CONCURRENCY = 100;

let tmp: string;
let main: MainProcess;
let port: number;
let pid: number;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-pre-auth-'));
  main = startMain(
    {
      PORT: '0',
      HOST: '127.0.0.1',
      VFIO_FLEET_DATA_DIR: path.join(tmp, 'data'),
      VFIO_FLEET_LOCAL_AGENT: '0',
      VFIO_FLEET_UI: '0',
    },
    { fdLimit: FD_LIMIT },
  );
  const url = await listeningUrl(main, 90_000);
  if (url === undefined) throw new Error(`the server did not start:\n${main.output()}`);
  port = Number(new URL(url).port);
  pid = main.child.pid ?? 0;
}, 120_000);
afterAll(async () => {
  main?.child.kill('SIGKILL');
  await rm(tmp, { recursive: true, force: true });
});

/** GET /api/health on a connection of its own (no keep-alive socket left on the server). */
function health(): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/api/health', agent: false, timeout: 5_000 },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

interface Exchange {
  /** What the server sent before it closed (or before `timeoutMs`). */
  response: string;
  /** The server ended the connection (FIN or reset) within `timeoutMs`. */
  closedByServer: boolean;
  /** ms from connect until the server closed. */
  closedAfterMs: number;
}

/** Sends `text` and reads until the server closes the connection or `timeoutMs` passes. */
function exchange(text: string, timeoutMs: number): Promise<Exchange> {
  return new Promise((resolve) => {
    const started = performance.now();
    let response = '';
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ response, closedByServer: false, closedAfterMs: Number.NaN });
    }, timeoutMs);
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ response, closedByServer: true, closedAfterMs: performance.now() - started });
    });
  });
}

/** Sends `text` and never reads; the caller destroys it (the attacker leaving). */
function sendAndIgnore(text: string): Promise<Socket> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.pause();
      socket.write(text, () => resolve(socket));
    });
    socket.on('error', () => resolve(socket));
  });
}

const upgrade = (target: string, headers: string[] = [], method = 'GET') =>
  [
    `${method} ${target} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Connection: Upgrade',
    'Upgrade: websocket',
    ...headers,
    '',
    '',
  ].join('\r\n');

const VALID_KEY = ['Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'];

/** Each kind of request of the flood, and the status the server must answer it with. */
const KINDS: { name: string; text: string; status: number }[] = [
  // `new URL` throws on this target: before, the throw took the whole process down.
  { name: 'unparseable target', text: upgrade('http://['), status: 400 },
  { name: 'another path', text: upgrade('/nope', VALID_KEY), status: 404 },
  { name: 'a UI path', text: upgrade('/', VALID_KEY), status: 404 },
  { name: 'h2c to the API', text: upgrade('/api/trpc/auth.me'), status: 404 },
  { name: 'agent path, no key', text: upgrade('/api/agent'), status: 400 },
  {
    name: 'agent path, junk key and version',
    text: upgrade('/api/agent', ['Sec-WebSocket-Key: junk', 'Sec-WebSocket-Version: 99']),
    status: 400,
  },
  { name: 'agent path, POST', text: upgrade('/api/agent', VALID_KEY, 'POST'), status: 405 },
];

describe('the pre-auth surface of a real server process', () => {
  it('answers or closes every upgrade request, ends silent sockets at their deadlines, and keeps serving', async () => {
    expect(await health()).toBe(200);
    const baseline = socketCount(pid);

    // Started first, so their deadlines run while the flood goes on.
    const silentWs = exchange(upgrade('/api/agent', VALID_KEY), 30_000);
    const midHeaders = exchange('GET /api/agent HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr', 30_000);

    // Each kind answered as it should, one at a time first.
    for (const kind of KINDS) {
      const got = await exchange(kind.text, 5_000);
      expect(got.response.split('\r\n')[0], kind.name).toMatch(
        new RegExp(`^HTTP/1\\.1 ${kind.status} `),
      );
      expect(got.closedByServer, kind.name).toBe(true);
    }

    // The flood: every third sender never reads and leaves only afterwards (it cannot see the
    // close); the others must see the server close their connection.
    const ignoring: Socket[] = [];
    const leftOpen: string[] = [];
    let sent = 0;
    const worker = async () => {
      while (sent < FLOOD && leftOpen.length < 10) {
        const i = sent++;
        const kind = KINDS[i % KINDS.length] ?? KINDS[0];
        if (kind === undefined) return;
        if (i % 3 === 0) {
          ignoring.push(await sendAndIgnore(kind.text));
          continue;
        }
        const got = await exchange(kind.text, 5_000);
        if (!got.closedByServer) leftOpen.push(kind.name);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    for (const socket of ignoring) socket.destroy();
    expect(leftOpen, 'upgrade requests the server neither answered nor closed').toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(FLOOD);

    // The WebSocket that never says hello: an error and a close frame at the hello deadline, and
    // the TCP connection gone a close-grace later, though this peer never answers the close.
    const silent = await silentWs;
    expect(silent.response).toMatch(/^HTTP\/1\.1 101 /);
    expect(silent.response).toContain('no hello in time');
    expect(silent.closedByServer).toBe(true);
    expect(silent.closedAfterMs).toBeGreaterThanOrEqual(HELLO_TIMEOUT_MS - 100);
    expect(silent.closedAfterMs).toBeLessThan(HELLO_TIMEOUT_MS + CLOSE_GRACE_MS + SLACK_MS);

    // Half a header block: 408 once the headers deadline passes.
    const half = await midHeaders;
    expect(half.response).toMatch(/^HTTP\/1\.1 408 /);
    expect(half.closedAfterMs).toBeLessThan(HEADERS_TIMEOUT_MS + CHECK_INTERVAL_MS + SLACK_MS);

    // Nothing left behind: no socket beyond the baseline, none in CLOSE_WAIT, and still serving.
    const settled = await poll(
      () => (socketCount(pid) <= baseline && closeWaitCount(port) === 0 ? true : undefined),
      5_000,
    );
    expect(
      settled,
      `sockets ${socketCount(pid)} (baseline ${baseline}), CLOSE_WAIT ${closeWaitCount(port)}`,
    ).toBe(true);
    expect(await health()).toBe(200);
    const agent = new WebSocket(`ws://127.0.0.1:${port}/api/agent`);
    const opened = await new Promise<boolean>((resolve) => {
      agent.once('open', () => resolve(true));
      agent.once('error', () => resolve(false));
    });
    agent.terminate();
    expect(opened).toBe(true);
    expect(main.child.exitCode, main.output()).toBeNull();
  }, 60_000);
});
