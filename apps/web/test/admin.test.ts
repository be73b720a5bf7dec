// The administration API the dashboard's admin pages use, end to end: tokens.create with labels
// prints a command line that a real shell turns into the words and the token (in the agent's
// environment, never its arguments) the agent needs, and a real agent started with exactly those
// enrolls with those labels; agents.list pages through the
// enrolled agents with their hosts; agents.revoke by agent id shows up there and in audit.list,
// which names the host. Real server on port 0, real agent processes, on PGlite and PostgreSQL.
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { users } from '@vfio-fleet/db';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../src/auth/passwords';
import { agentCommand } from '../src/downloads/install-commands';
import { shellWord } from '../src/shell-word';
import { type ApiClient, apiClient, failure } from './helpers/api-client';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  startAgent,
  startFleet,
} from './helpers/harness';

const PASSWORD = 'a long enough password';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-admin-'));
  // A stand-in agent on PATH that prints the token it was given and its arguments.
  const stub = path.join(tmp, 'bin', 'vfio-fleet-agent');
  await mkdir(path.dirname(stub));
  await writeFile(stub, `#!/bin/sh\nprintf '%s\\0' "\${VFIO_FLEET_TOKEN-(unset)}" "$@"\n`);
  await chmod(stub, 0o755);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/**
 * What /bin/sh runs when an admin pastes `command`: the agent's arguments and the token in its
 * environment (through the stand-in agent on PATH).
 */
function pasted(command: string): { token: string; argv: string[] } {
  const out = execFileSync('/bin/sh', ['-c', command], {
    encoding: 'utf8',
    env: { ...process.env, PATH: `${path.join(tmp, 'bin')}:/usr/bin:/bin` },
  });
  const [token = '', ...argv] = out.split('\0').slice(0, -1);
  return { token, argv };
}

describe('agentCommand', () => {
  it('passes the token in the environment, quotes what a shell would interpret, and leaves plain words bare', () => {
    expect(shellWord('rack=r01')).toBe('rack=r01');
    expect(shellWord('http://[::1]:3000')).toBe("'http://[::1]:3000'");
    const labels = { note: "it's $HOME; `rm -rf /` *", empty: '', rack: 'r01' };
    const command = agentCommand('http://10.0.0.1:3000', 'tok_EN-123', labels);
    expect(
      command.startsWith(
        'VFIO_FLEET_TOKEN=tok_EN-123 vfio-fleet-agent run --server http://10.0.0.1:3000 ',
      ),
    ).toBe(true);
    expect(pasted(command)).toEqual({
      token: 'tok_EN-123',
      argv: [
        'run',
        '--server',
        'http://10.0.0.1:3000',
        '--label',
        "note=it's $HOME; `rm -rf /` *",
        '--label',
        'empty=',
        '--label',
        'rack=r01',
      ],
    });
    // Not in the arguments, where `ps` shows it to every local user.
    expect(pasted(agentCommand('http://h', "t'o k$", {}))).toEqual({
      token: "t'o k$",
      argv: ['run', '--server', 'http://h'],
    });
  });
});

describe.each(drivers)('admin API (%s)', (driver) => {
  let fleet: Fleet;
  let admin: ApiClient;
  let operator: ApiClient;
  const agents: AgentProcess[] = [];

  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1, offlineAfterSeconds: 5 });
    for (const [username, role] of [
      ['ada', 'admin'],
      ['oscar', 'operator'],
    ] as const) {
      await fleet.db
        .insert(users)
        .values({ username, role, passwordHash: await hashPassword(PASSWORD) });
    }
    const login = async (username: string) => {
      const client = apiClient(fleet.url);
      await client.api.auth.login.mutate({ username, password: PASSWORD });
      return client;
    };
    admin = await login('ada');
    operator = await login('oscar');
  }, 60_000);

  afterAll(async () => {
    for (const agent of agents.splice(0)) await agent.kill();
    await fleet?.close();
  });

  it('refuses labels the agent would refuse, naming the field', async () => {
    const refusedLabels: Record<string, string>[] = [
      { 'has space': 'x' },
      { toString: 'x' },
      { rack: 'x'.repeat(257) },
    ];
    for (const labels of refusedLabels) {
      const refused = await failure(admin.api.tokens.create.mutate({ ttlHours: 1, labels }));
      expect(refused).toMatchObject({ code: 'BAD_REQUEST' });
      expect(refused.message).toContain('labels');
    }
  });

  it('enrolls real agents with the exact command line tokens.create printed, labels included', async () => {
    const labels = { rack: 'r 7', 'example.com/tier': "gold's" };
    const created = await admin.api.tokens.create.mutate({
      label: 'admin test',
      ttlHours: 1,
      maxUses: 2,
      labels,
    });
    expect(created.labels).toEqual(labels);
    expect(created.server).toBe(fleet.url);
    const { token, argv } = pasted(created.command);
    expect(token).toBe(created.token);
    expect(argv).toEqual([
      'run',
      '--server',
      fleet.url,
      '--label',
      'rack=r 7',
      '--label',
      "example.com/tier=gold's",
    ]);

    for (const scenario of ['mlx5-vf', 'vfio-bound'] as const) {
      const root = path.join(tmp, driver, scenario, 'host');
      await buildScenario(root, scenario);
      // startAgent adds `run` itself: everything after it, and the token, from the printed command.
      agents.push(
        startAgent(
          [
            ...argv.slice(1),
            '--simulate',
            root,
            '--interval',
            '1',
            '--state-dir',
            path.join(tmp, driver, scenario, 'state'),
          ],
          { VFIO_FLEET_TOKEN: token },
        ),
      );
    }
    const listed = await poll(async () => {
      const page = await admin.api.agents.list.query({});
      // Online and labelled: the host row may be seen a moment before its labels are written.
      const ready = page.items.every(
        (a) => a.hostState === 'online' && Object.keys(a.labels).length > 0,
      );
      return page.items.length === 2 && ready ? page : undefined;
    }, 60_000);
    expect(listed?.items.map((a) => a.labels)).toEqual([labels, labels]);
    expect(listed?.items.every((a) => a.hostname !== null && a.revokedAt === null)).toBe(true);
    expect(listed?.nextCursor).toBeNull();

    const tokens = await admin.api.tokens.list.query({});
    expect(tokens.items[0]).toMatchObject({ label: 'admin test', uses: 2, state: 'used-up' });
  });

  it('agents.list pages without repeats, and shows a revoked agent as revoked', async () => {
    const first = await admin.api.agents.list.query({ limit: 1 });
    expect(first.items).toHaveLength(1);
    expect(first.nextCursor).not.toBeNull();
    const second = await admin.api.agents.list.query({ limit: 1, cursor: first.nextCursor });
    expect(second.items).toHaveLength(1);
    expect(second.nextCursor).toBeNull();
    const [a, b] = [first.items[0], second.items[0]];
    if (a === undefined || b === undefined) throw new Error('missing agents');
    expect(a.agentId).not.toBe(b.agentId);
    expect(a.enrolledAt >= b.enrolledAt).toBe(true);

    const revoked = await admin.api.agents.revoke.mutate({ agentId: b.agentId });
    expect(revoked.revoked).toEqual([b.agentId]);
    const live = await admin.api.agents.list.query({ state: 'live' });
    expect(live.items.map((x) => x.agentId)).toEqual([a.agentId]);
    const gone = await admin.api.agents.list.query({ state: 'revoked' });
    expect(gone.items.map((x) => x.agentId)).toEqual([b.agentId]);
    expect(gone.items[0]?.revokedAt).not.toBeNull();
    // Disconnected at once: its host goes offline without waiting for the sweeper.
    const offline = await poll(async () => {
      const page = await admin.api.agents.list.query({ state: 'revoked' });
      return page.items[0]?.hostState === 'offline' ? page : undefined;
    }, 30_000);
    expect(offline).toBeDefined();

    // The audit trail names the host of the revocation (one lookup per page, not a join per row).
    const audit = await operator.api.audit.list.query({ action: 'agent-revoked' });
    expect(audit.items.map((x) => [x.username, x.hostId, x.hostname])).toEqual([
      ['ada', b.hostId, b.hostname],
    ]);
    const created = await operator.api.audit.list.query({ action: 'token-created' });
    expect(created.items[0]).toMatchObject({ hostId: null, hostname: null });
    expect(created.items[0]?.detail).toMatchObject({ labels: { rack: 'r 7' } });
  });

  it('keeps agents.list to admins', async () => {
    expect(await failure(operator.api.agents.list.query({}))).toMatchObject({
      code: 'FORBIDDEN',
    });
    expect(await failure(admin.api.agents.list.query({ cursor: 'nope' }))).toMatchObject({
      code: 'BAD_REQUEST',
    });
  });
});
