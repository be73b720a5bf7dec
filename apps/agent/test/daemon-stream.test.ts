// `run` as a real process against a real ws server: enrollment, the inventory stream (snapshot,
// silence, deltas), resume and resync across server restarts, hostile frames and clean shutdown.
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildScenario, hotplug } from '@vfio-fleet/host-fixtures';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from './helpers/run-agent';
import {
  type AgentProcess,
  poll,
  ServerState,
  startAgent,
  TestServer,
} from './helpers/test-server';

let tmp: string;
const agents: AgentProcess[] = [];
const servers: TestServer[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-daemon-stream-'));
});

afterEach(async () => {
  // A failed test must not leave agents running into the next one.
  for (const agent of agents.splice(0)) agent.child.kill('SIGKILL');
  for (const server of servers.splice(0)) await server.close();
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function host(name: string): Promise<{ root: string; stateDir: string }> {
  const root = path.join(tmp, name, 'host');
  await buildScenario(root, 'dual-gpu');
  return { root, stateDir: path.join(tmp, name, 'state') };
}

async function server(options: Parameters<typeof TestServer.start>[0] = {}): Promise<TestServer> {
  const started = await TestServer.start(options);
  servers.push(started);
  return started;
}

function agent(
  srv: TestServer,
  where: { root: string; stateDir: string },
  extra: string[] = [],
  env: Record<string, string> = {},
): AgentProcess {
  const started = startAgent(
    [
      '--server',
      srv.url,
      // The issue's short form, `--simulate FIXTURE_DIR` (daemon-jobs uses --root DIR --simulate).
      '--simulate',
      where.root,
      '--interval',
      '1',
      '--state-dir',
      where.stateDir,
      ...extra,
    ],
    env,
  );
  agents.push(started);
  return started;
}

/** A NIC that was not there before, in an IOMMU group of its own. */
const HOTPLUGGED = {
  address: '0000:b1:00.0',
  vendorId: '8086',
  deviceId: '1572',
  classCode: '020000',
  iommuGroup: 90,
  driver: null,
};

describe('vfio-fleet-agent run: enrollment', () => {
  it('enrolls with the token once, stores the credential 0600, and uses it on the next start', async () => {
    const where = await host('enroll');
    const srv = await server();
    const token = srv.state.issueToken();
    const first = agent(srv, where, ['--token', token, '--label', 'rack=r12']);

    const hello = await srv.waitFor('hello');
    expect(hello.auth.kind).toBe('enroll');
    expect(hello.labels).toEqual({ rack: 'r12' });
    expect(hello.host.hostname).toBe('gpu-node-01');
    expect(hello.resume).toBeNull();
    const snapshot = await srv.waitFor('snapshot');
    expect(snapshot.seq).toBeGreaterThan(0);
    expect(snapshot.snapshot.devices.map((d) => d.address)).toContain('0000:17:00.0');

    const file = path.join(where.stateDir, 'credential.json');
    const info = await stat(file);
    expect(info.mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8'));
    expect(srv.state.credentials.get(stored.agentId)).toBe(stored.secret);
    expect(await first.stop()).toBe(0);

    // Second start: no token at all; the stored credential must be enough.
    const from = srv.received.length;
    const second = agent(srv, where);
    const again = await srv.waitFor('hello', { from });
    expect(again.auth).toEqual({
      kind: 'credential',
      agentId: stored.agentId,
      secret: stored.secret,
    });
    const fresh = await srv.waitFor('snapshot', { from });
    // A new process is a new epoch: the old stream's memory is gone with it.
    expect(fresh.epoch).not.toBe(snapshot.epoch);
    expect(await second.stop()).toBe(0);
    expect(srv.closes.filter((code) => code === 1000)).toHaveLength(2);
  });

  it('exits 3 with a clear message when the server rejects its credential, instead of retrying', async () => {
    const where = await host('revoked');
    await mkdir(where.stateDir, { recursive: true });
    await writeFile(
      path.join(where.stateDir, 'credential.json'),
      JSON.stringify({ agentId: 'revoked-agent', secret: 'a'.repeat(32) }),
      { mode: 0o600 },
    );
    const srv = await server();
    const run = agent(srv, where);
    const code = await Promise.race([
      run.exited,
      new Promise((resolve) => setTimeout(() => resolve('still running'), 8_000)),
    ]);
    expect(code, run.stderr()).toBe(3);
    expect(run.stderr()).toContain(
      'the server refused this agent (auth-failed): credential rejected',
    );
    expect(srv.messages('hello')).toHaveLength(1);
  });

  it('stops on a damaged credential file instead of enrolling again with its token', async () => {
    const where = await host('damaged-credential');
    await mkdir(where.stateDir, { recursive: true });
    const file = path.join(where.stateDir, 'credential.json');
    const srv = await server();
    const token = srv.state.issueToken();
    for (const damaged of ['{"agentId": "half-writ', JSON.stringify({ agentId: 'x', secret: 1 })]) {
      await writeFile(file, damaged, { mode: 0o600 });
      const run = agent(srv, where, ['--token', token]);
      const code = await Promise.race([
        run.exited,
        new Promise((resolve) => setTimeout(() => resolve('still running'), 8_000)),
      ]);
      expect(code, run.stderr()).toBe(1);
      expect(run.stderr()).toContain(`credential file ${file} is`);
      expect(run.stderr()).toContain('remove it and enroll again with --token');
      // Said as the operator's problem it is, not as a crash.
      expect(run.stderr()).not.toMatch(/^\s+at /m);
      // The file is left for the operator to look at, and the token is not spent.
      expect(await readFile(file, 'utf8')).toBe(damaged);
    }
    expect(srv.received).toHaveLength(0);
    expect(srv.state.tokens.has(token)).toBe(true);
  });

  it('takes the token from VFIO_FLEET_TOKEN (agent.env), keeping it off its command line', async () => {
    const where = await host('env-token');
    const srv = await server();
    const token = srv.state.issueToken();
    const run = agent(srv, where, [], { VFIO_FLEET_TOKEN: token });
    const hello = await srv.waitFor('hello');
    expect(hello.auth).toEqual({ kind: 'enroll', token });
    // What `ps` shows every local user: the arguments, not the environment (root-only).
    const cmdline = await readFile(`/proc/${run.child.pid}/cmdline`, 'utf8');
    expect(cmdline).toContain('run');
    expect(cmdline).not.toContain(token);
    await srv.waitFor('snapshot');
    expect(await run.stop()).toBe(0);
  });

  it('refuses to start without a credential or a token', async () => {
    const where = await host('no-token');
    const srv = await server();
    // An empty VFIO_FLEET_TOKEN= (install.sh writes one on a reinstall without --token) is none.
    const run = agent(srv, where, [], { VFIO_FLEET_TOKEN: '' });
    expect(await run.exited).toBe(2);
    expect(run.stderr()).toContain('no --token');
    expect(srv.received).toHaveLength(0);
  });
});

describe('vfio-fleet-agent run: command line', () => {
  it.each([
    [[], '--server URL is required'],
    [['--server', 'ftp://fleet.example.com'], 'http(s):// or ws(s)://'],
    [['--server', 'http://127.0.0.1:9', '--simulate'], '--simulate needs --root DIR'],
    [['--server', 'http://127.0.0.1:9', '--root', '.', '--allow-rebind'], 'add --simulate'],
    [['--server', 'http://127.0.0.1:9', '--label', 'toString=x'], '--label toString=x'],
    [['--server', 'http://127.0.0.1:9', '--interval', '0'], '--interval'],
    [['--server', 'http://127.0.0.1:9', '--token', 'short'], '--token'],
    [['--server', 'http://127.0.0.1:9', '--simulate-faults', 'f.json'], 'needs --simulate'],
  ])('rejects %j with exit 2', (args, message) => {
    const run = runAgent(['run', ...args]);
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).toContain(message);
  });

  it('names VFIO_FLEET_TOKEN when the token from the environment is malformed', () => {
    const run = runAgent(['run', '--server', 'http://127.0.0.1:9'], { VFIO_FLEET_TOKEN: 'short' });
    expect(run.status, run.stderr).toBe(2);
    expect(run.stderr).toContain('VFIO_FLEET_TOKEN:');
    // The flag wins over the environment.
    const flag = runAgent(['run', '--server', 'http://127.0.0.1:9', '--token', 'tiny'], {
      VFIO_FLEET_TOKEN: 'x'.repeat(43),
    });
    expect(flag.stderr).toContain('--token:');
  });
});

describe('vfio-fleet-agent run: inventory stream', () => {
  it('sends nothing but heartbeats while nothing changes, then a delta after a hot-plug', async () => {
    const where = await host('quiet');
    const srv = await server({ heartbeatSeconds: 1 });
    agent(srv, where, ['--token', srv.state.issueToken()]);
    const snapshot = await srv.waitFor('snapshot');
    const after = srv.received.length;

    // Three scan intervals of an unchanged host.
    await new Promise((resolve) => setTimeout(resolve, 3_200));
    const types = new Set(srv.received.slice(after).map((r) => r.message.type));
    expect(
      [...types].every((t) => t === 'ping' || t === 'pong'),
      [...types].join(),
    ).toBe(true);
    expect(types.has('ping')).toBe(true);

    await hotplug(where.root, HOTPLUGGED);
    const delta = await srv.waitFor('delta', { from: after });
    expect(delta.epoch).toBe(snapshot.epoch);
    expect(delta.baseSeq).toBe(snapshot.seq);
    expect(delta.delta.devicesAdded.map((d) => d.address)).toEqual([HOTPLUGGED.address]);
    expect(delta.delta.devicesRemoved).toEqual([]);
    const agentId = [...srv.state.credentials.keys()][0] ?? '';
    expect(srv.state.latest(agentId)?.devices.map((d) => d.address)).toContain(HOTPLUGGED.address);
  });

  it('resumes with deltas after a server restart that kept its state, and resyncs with one that forgot', async () => {
    const where = await host('resume');
    const state = new ServerState();
    const first = await server({ state });
    agent(first, where, ['--token', state.issueToken()]);
    const snapshot = await first.waitFor('snapshot');
    await poll(() => (state.streams.size > 0 ? true : undefined), 5_000);
    const port = first.port;
    await first.close();
    servers.splice(servers.indexOf(first), 1);

    // Same memory: the agent resumes from its acked seq and sends no snapshot.
    const second = await server({ port, state });
    const hello = await second.waitFor('hello', { timeoutMs: 15_000 });
    expect(hello.resume).toEqual({ epoch: snapshot.epoch, lastAckedSeq: snapshot.seq });
    await hotplug(where.root, HOTPLUGGED);
    const delta = await second.waitFor('delta');
    expect(delta.baseSeq).toBe(snapshot.seq);
    expect(delta.delta.devicesAdded.map((d) => d.address)).toEqual([HOTPLUGGED.address]);
    expect(second.messages('snapshot')).toHaveLength(0);

    // The server forgot the stream (not the credential): welcome says snapshot.
    await second.close();
    servers.splice(servers.indexOf(second), 1);
    state.streams.clear();
    const third = await server({ port, state });
    const resent = await third.waitFor('snapshot', { timeoutMs: 15_000 });
    expect(resent.epoch).toBe(snapshot.epoch);
    expect(resent.seq).toBeGreaterThan(delta.seq);
    expect(resent.snapshot.devices.map((d) => d.address)).toContain(HOTPLUGGED.address);

    // A resync asked for mid-session gets a full snapshot too.
    const from = third.received.length;
    third.send({ type: 'resync', reason: 'test asked' });
    const again = await third.waitFor('snapshot', { from });
    expect(again.seq).toBeGreaterThan(resent.seq);
  });
});

describe('vfio-fleet-agent run: a simulated fleet', () => {
  it('runs several simulated agents on one machine, each enrolled and streaming on its own', async () => {
    const srv = await server();
    const hosts = await Promise.all(['a', 'b', 'c', 'd'].map((name) => host(`fleet-${name}`)));
    for (const [i, where] of hosts.entries()) {
      agent(srv, where, ['--token', srv.state.issueToken(), '--label', `slot=${i}`]);
    }
    const epochs = await poll(() => {
      const snapshots = srv.messages('snapshot');
      return snapshots.length >= hosts.length ? new Set(snapshots.map((m) => m.epoch)) : undefined;
    }, 15_000);
    expect(epochs?.size).toBe(hosts.length);
    expect(srv.state.credentials.size).toBe(hosts.length);
    expect(new Set(srv.messages('hello').map((h) => h.labels.slot))).toEqual(
      new Set(['0', '1', '2', '3']),
    );
    // A hot-plug on one host reaches the server as a delta from that host only.
    await hotplug(hosts[2]?.root ?? '', HOTPLUGGED);
    const delta = await srv.waitFor('delta');
    const sender = srv.received.find((r) => r.message === delta)?.connection;
    const hello = srv.received.find((r) => r.connection === sender && r.message.type === 'hello');
    expect(hello?.message.type === 'hello' && hello.message.labels.slot).toBe('2');
  });
});

describe('vfio-fleet-agent run: robustness', () => {
  it('ignores malformed, unknown and oversized server frames without crashing', async () => {
    const where = await host('hostile');
    const srv = await server();
    const run = agent(srv, where, ['--token', srv.state.issueToken()]);
    await srv.waitFor('snapshot');

    srv.sendRaw('this is not json');
    srv.sendRaw(JSON.stringify({ type: 'take-over-the-host', now: true }));
    srv.sendRaw(JSON.stringify({ type: 'job', jobId: '../../etc/passwd', address: 'x' }));
    srv.sendRaw(JSON.stringify({ type: 'ack', epoch: 'x', seq: 1, pad: 'y'.repeat(200_000) }));
    srv.sendRaw(Buffer.from([0xff, 0x00, 0x01]));
    srv.send({ type: 'error', code: 'internal', message: 'not fatal', fatal: false });
    srv.send({ type: 'ping', nonce: 'still-alive-1', sentAt: new Date().toISOString() });
    await srv.waitFor('pong', { match: (m) => m.nonce === 'still-alive-1' });
    expect(run.child.exitCode).toBeNull();
    expect(run.stderr()).toContain('malformed server message ignored');
    expect(srv.messages('job-accepted')).toHaveLength(0);

    // Beyond the receive bound the socket is dropped (close 1009) and redialled, still alive.
    const from = srv.received.length;
    srv.sendRaw('z'.repeat(4 * 1024 * 1024));
    const hello = await srv.waitFor('hello', { from, timeoutMs: 15_000 });
    expect(hello.auth.kind).toBe('credential');
    expect(run.child.exitCode).toBeNull();

    // A fatal error ends the agent whatever its code: retrying unchanged cannot help.
    srv.send({ type: 'error', code: 'unsupported-protocol', message: 'too new', fatal: true });
    expect(await run.exited).toBe(3);
    expect(run.stderr()).toContain('the server refused this agent (unsupported-protocol): too new');
  });

  it('drops a server that stops answering pings and reconnects', async () => {
    const where = await host('silent');
    const srv = await server({ heartbeatSeconds: 1, answerPings: false });
    agent(srv, where, ['--token', srv.state.issueToken()]);
    await srv.waitFor('snapshot');
    const hellos = await poll(
      () => (srv.messages('hello').length >= 2 ? srv.messages('hello') : undefined),
      10_000,
    );
    expect(hellos?.[1]?.auth.kind).toBe('credential');
    // Three pings went unanswered before the drop.
    expect(srv.received.filter((r) => r.connection === 1 && r.message.type === 'ping').length).toBe(
      3,
    );
  });

  it('exits 0 promptly on SIGTERM, closing the socket with 1000', async () => {
    const where = await host('sigterm');
    const srv = await server();
    const run = agent(srv, where, ['--token', srv.state.issueToken()]);
    await srv.waitFor('snapshot');
    const started = Date.now();
    expect(await run.stop('SIGTERM', 8_000)).toBe(0);
    expect(Date.now() - started).toBeLessThan(8_000);
    await poll(() => (srv.closes.length > 0 ? true : undefined), 5_000);
    expect(srv.closes).toEqual([1000]);
  });
});
