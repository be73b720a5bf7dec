// Who may call what, over real HTTP as an attacker would send it (raw requests, no tRPC client to
// smooth anything over): every procedure of the router under every role, the same checks inside a
// batch, and a session cookie planted before login that login must never adopt.
import { enrollmentTokens, users } from '@vfio-fleet/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { appRouter } from '../src/api/root';
import { hashPassword } from '../src/auth/passwords';
import { SESSION_COOKIE } from '../src/auth/sessions';
import { apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, startFleet } from './helpers/harness';

type Role = 'viewer' | 'operator' | 'admin';
type Caller = 'anonymous' | Role;

/**
 * The least role of every procedure: the access policy as the README states it. A procedure the
 * router gains without an entry here fails the first test, so none escapes the matrix.
 */
const LEAST_ROLE: Record<string, Role | 'public'> = {
  'auth.login': 'public',
  'auth.logout': 'viewer',
  'auth.me': 'viewer',
  'fleet.summary': 'viewer',
  'fleet.capacity': 'viewer',
  'fleet.drift': 'viewer',
  'fleet.labelKeys': 'viewer',
  'fleet.agentVersions': 'viewer',
  'hosts.list': 'viewer',
  'hosts.get': 'viewer',
  'hostView.get': 'viewer',
  'devices.search': 'viewer',
  'groups.get': 'viewer',
  'jobs.list': 'viewer',
  'jobs.get': 'viewer',
  'jobs.preview': 'operator',
  'jobs.create': 'operator',
  'jobs.previewBulk': 'operator',
  'jobs.createBulk': 'operator',
  'jobs.cancel': 'operator',
  'audit.list': 'operator',
  'tokens.create': 'admin',
  'tokens.list': 'admin',
  'tokens.revoke': 'admin',
  'agents.list': 'admin',
  'agents.revoke': 'admin',
  'users.list': 'admin',
  'users.create': 'admin',
  'users.setRole': 'admin',
  'users.disable': 'admin',
  'users.changePassword': 'viewer',
};

const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
const PASSWORD = 'correct horse battery staple';
const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';

/** What the router says of each procedure (its flat `path → procedure` map, read with zod). */
const procedureDefSchema = z.object({
  type: z.enum(['query', 'mutation', 'subscription']),
  inputs: z.array(z.unknown()),
});
const procedures: Record<string, z.infer<typeof procedureDefSchema>> = Object.fromEntries(
  Object.entries(appRouter._def.procedures).map(([path, procedure]) => [
    path,
    procedureDefSchema.parse(Reflect.get(procedure, '_def')),
  ]),
);

interface Answer {
  status: number;
  code: string | null;
}

/** tRPC's JSON error body: `{ error: { data: { code } } }` (one per call in a batch). */
function codeOf(body: unknown): string | null {
  const error = (body as { error?: { data?: { code?: unknown } } } | null)?.error;
  return typeof error?.data?.code === 'string' ? error.data.code : null;
}

/** One raw tRPC call: a query as GET ?input=, a mutation as a JSON POST, as httpLink sends them. */
async function call(
  fleet: Fleet,
  path: string,
  input: unknown,
  cookie: string | null,
): Promise<Answer> {
  const type = procedures[path]?.type;
  const headers: Record<string, string> = cookie === null ? {} : { cookie };
  const url = `${fleet.url}/api/trpc/${path}`;
  const res =
    type === 'query'
      ? await fetch(`${url}?input=${encodeURIComponent(JSON.stringify(input))}`, { headers })
      : await fetch(url, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: JSON.stringify(input),
        });
  return { status: res.status, code: codeOf(await res.json()) };
}

/** A batch of calls of one kind (all queries or all mutations); each call's own error code. */
async function batch(
  fleet: Fleet,
  kind: 'query' | 'mutation',
  calls: [path: string, input: unknown][],
  cookie: string | null,
): Promise<(string | null)[]> {
  const paths = calls.map(([p]) => p).join(',');
  const inputs = JSON.stringify(Object.fromEntries(calls.map(([, input], i) => [i, input])));
  const url = `${fleet.url}/api/trpc/${paths}?batch=1`;
  const headers: Record<string, string> = cookie === null ? {} : { cookie };
  const res =
    kind === 'query'
      ? await fetch(`${url}&input=${encodeURIComponent(inputs)}`, { headers })
      : await fetch(url, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json' },
          body: inputs,
        });
  const body = (await res.json()) as unknown[];
  expect(body).toHaveLength(calls.length);
  return body.map(codeOf);
}

describe.each(drivers)('API access (%s)', (driver) => {
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await startFleet(driver);
    const passwordHash = await hashPassword(PASSWORD);
    await fleet.db.insert(users).values(
      (['viewer', 'operator', 'admin'] as const).map((role) => ({
        username: `the-${role}`,
        role,
        passwordHash,
      })),
    );
  });
  afterAll(async () => {
    await fleet?.close();
  });

  /** A fresh session of `role` as the Cookie header value. */
  async function sessionOf(role: Role): Promise<string> {
    const client = apiClient(fleet.url);
    await client.api.auth.login.mutate({ username: `the-${role}`, password: PASSWORD });
    if (client.cookie === null) throw new Error(`no session cookie for ${role}`);
    return client.cookie;
  }

  it('names the least role of every procedure the router has', () => {
    expect(Object.keys(procedures).sort()).toEqual(Object.keys(LEAST_ROLE).sort());
  });

  it.each<Caller>(['anonymous', 'viewer', 'operator', 'admin'])(
    'answers every procedure as its least role says, to %s',
    async (caller) => {
      const cookie = caller === 'anonymous' ? null : await sessionOf(caller);
      // Logout last: it ends the session the other calls use.
      const paths = Object.keys(LEAST_ROLE).sort(
        (a, b) => Number(a === 'auth.logout') - Number(b === 'auth.logout'),
      );
      const seen: Record<string, Answer> = {};
      const expected: Record<string, Answer> = {};
      for (const path of paths) {
        const least = LEAST_ROLE[path] ?? 'admin';
        const takesInput = (procedures[path]?.inputs.length ?? 0) > 0;
        // An input no procedure accepts: a caller who passes the role check gets BAD_REQUEST and
        // changes nothing (procedures without input just answer).
        seen[path] = await call(fleet, path, 'not an object', cookie);
        const allowed =
          least === 'public' || (caller !== 'anonymous' && RANK[caller] >= RANK[least]);
        expected[path] = allowed
          ? takesInput
            ? { status: 400, code: 'BAD_REQUEST' }
            : { status: 200, code: null }
          : caller === 'anonymous'
            ? { status: 401, code: 'UNAUTHORIZED' }
            : { status: 403, code: 'FORBIDDEN' };
      }
      expect(seen).toEqual(expected);
    },
  );

  it('checks the role of each call inside a batch, whatever the others are', async () => {
    const tokensBefore = (await fleet.db.select().from(enrollmentTokens)).length;
    const usersBefore = (await fleet.db.select().from(users)).length;
    const viewer = await sessionOf('viewer');
    // Queries a viewer may make, batched with ones it may not: only those are refused.
    expect(
      await batch(
        fleet,
        'query',
        [
          ['fleet.summary', {}],
          ['users.list', {}],
          ['jobs.list', {}],
          ['audit.list', {}],
          ['tokens.list', {}],
        ],
        viewer,
      ),
    ).toEqual([null, 'FORBIDDEN', null, 'FORBIDDEN', 'FORBIDDEN']);
    // Valid mutations an admin's batch would run: refused one by one, so nothing is created.
    const mutations: [string, unknown][] = [
      ['tokens.create', { ttlHours: 1, maxUses: 1 }],
      ['users.create', { username: 'mallory', password: PASSWORD, role: 'admin' }],
      ['users.setRole', { userId: UNKNOWN_ID, role: 'admin' }],
    ];
    expect(await batch(fleet, 'mutation', mutations, viewer)).toEqual([
      'FORBIDDEN',
      'FORBIDDEN',
      'FORBIDDEN',
    ]);
    const operator = await sessionOf('operator');
    expect(
      await batch(
        fleet,
        'mutation',
        [['jobs.cancel', { jobId: UNKNOWN_ID }], ...mutations.slice(0, 2)],
        operator,
      ),
    ).toEqual(['NOT_FOUND', 'FORBIDDEN', 'FORBIDDEN']);
    expect(await batch(fleet, 'mutation', mutations.slice(0, 2), null)).toEqual([
      'UNAUTHORIZED',
      'UNAUTHORIZED',
    ]);
    expect(await fleet.db.select().from(enrollmentTokens)).toHaveLength(tokensBefore);
    expect(await fleet.db.select().from(users)).toHaveLength(usersBefore);
  });

  it('never adopts a session cookie set before login (session fixation)', async () => {
    // A value the attacker chose and planted in the victim's browser.
    const planted = `${SESSION_COOKIE}=${'A'.repeat(43)}`;
    const victim = apiClient(fleet.url);
    victim.cookie = planted;
    expect((await failure(victim.api.auth.me.query())).code).toBe('UNAUTHORIZED');
    await victim.api.auth.login.mutate({ username: 'the-admin', password: PASSWORD });
    expect(victim.cookie).not.toBeNull();
    expect(victim.cookie).not.toBe(planted);
    const attacker = apiClient(fleet.url);
    attacker.cookie = planted;
    expect((await failure(attacker.api.auth.me.query())).code).toBe('UNAUTHORIZED');

    // A real session of the attacker's own, planted before the victim (an admin) logs in: login
    // issues a new session, and the planted one stays the attacker's viewer session.
    const own = await sessionOf('viewer');
    const victim2 = apiClient(fleet.url);
    victim2.cookie = own;
    await victim2.api.auth.login.mutate({ username: 'the-admin', password: PASSWORD });
    expect(victim2.cookie).not.toBe(own);
    expect(await victim2.api.auth.me.query()).toMatchObject({ role: 'admin' });
    attacker.cookie = own;
    expect(await attacker.api.auth.me.query()).toMatchObject({ role: 'viewer' });
    expect((await failure(attacker.api.users.list.query({}))).code).toBe('FORBIDDEN');
  });
});
