// Users, sessions and roles through the real server and real HTTP (tRPC client, cookies kept as a
// browser keeps them), on PGlite and, with DATABASE_URL, PostgreSQL: the first admin, login and
// logout, cookie flags, one message for unknown user and wrong password, the login rate limit,
// role checks, user administration and the audit rows it leaves.
import { auditLog, type Database, sessions, users } from '@vfio-fleet/db';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { defaultLoginLimiters } from '../src/api/http-handler';
import { ensureAdmin } from '../src/auth/bootstrap-admin';
import { LoginAttempts } from '../src/auth/login-attempts';
import { hashPassword, verifyPassword } from '../src/auth/passwords';
import { SlidingWindowLimiter } from '../src/auth/rate-limit';
import { createLogger } from '../src/logger';
import { apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, startFleet } from './helpers/harness';

const logger = createLogger('silent');
const PASSWORD = 'correct horse battery staple';

async function createUser(db: Database, username: string, role: 'viewer' | 'operator' | 'admin') {
  const [row] = await db
    .insert(users)
    .values({ username, role, passwordHash: await hashPassword(PASSWORD) })
    .returning();
  if (row === undefined) throw new Error('no user row');
  return row;
}

async function loggedIn(fleet: Fleet, username: string, headers: Record<string, string> = {}) {
  const client = apiClient(fleet.url, headers);
  await client.api.auth.login.mutate({ username, password: PASSWORD });
  return client;
}

describe('passwords', () => {
  it('hashes with scrypt, a per-user salt and its parameters in the string', async () => {
    const a = await hashPassword(PASSWORD);
    const b = await hashPassword(PASSWORD);
    expect(a).toMatch(/^scrypt\$32768\$8\$1\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
    expect(a).not.toBe(b);
    expect(await verifyPassword(PASSWORD, a)).toBe(true);
    expect(await verifyPassword(`${PASSWORD}!`, a)).toBe(false);
    // A stored hash demanding absurd memory is refused, not computed.
    expect(await verifyPassword(PASSWORD, a.replace('$32768$', '$1073741824$'))).toBe(false);
    expect(await verifyPassword(PASSWORD, 'not-a-hash')).toBe(false);
  });

  it('limits events per key in a sliding window and says when to retry', () => {
    let now = 0;
    const limiter = new SlidingWindowLimiter({ limit: 2, windowMs: 10_000, now: () => now });
    limiter.hit('k');
    now = 4_000;
    limiter.hit('k');
    expect(limiter.check('k')).toEqual({ allowed: false, retryAfterSeconds: 6 });
    expect(limiter.check('other').allowed).toBe(true);
    now = 10_001;
    expect(limiter.check('k').allowed).toBe(true);
  });

  it('reserves an event in the same step as its check, and takes it back once on cancel', () => {
    const limiter = new SlidingWindowLimiter({ limit: 2, windowMs: 10_000, now: () => 0 });
    const first = limiter.reserve('k');
    const second = limiter.reserve('k');
    expect(limiter.reserve('k')).toEqual({ allowed: false, retryAfterSeconds: 10 });
    if (!first.allowed || !second.allowed) throw new Error('the first two were refused');
    first.cancel();
    first.cancel();
    expect(limiter.check('k').allowed).toBe(true);
    expect(limiter.reserve('k').allowed).toBe(true);
    expect(limiter.check('k').allowed).toBe(false);
    // A reset key has nothing left to take back.
    limiter.reset('k');
    second.cancel();
    expect(limiter.check('k').allowed).toBe(true);
  });

  it('admits login attempts: failures stay counted, success and no verdict take them back', () => {
    const limiters = {
      byIp: new SlidingWindowLimiter({ limit: 3, windowMs: 60_000 }),
      byUsername: new SlidingWindowLimiter({ limit: 2, windowMs: 60_000 }),
    };
    const attempts = new LoginAttempts(limiters, 2);
    const begin = (ip: string, user: string) => {
      const admission = attempts.begin(ip, user);
      if (!admission.allowed) throw new Error(admission.message);
      return admission.attempt;
    };
    // Two in flight from one address: a third waits for one of them to end.
    const a = begin('10.0.0.1', 'Ann');
    const b = begin('10.0.0.1', 'bob');
    expect(attempts.begin('10.0.0.1', 'cy')).toMatchObject({
      allowed: false,
      retryAfterSeconds: 1,
      message: expect.stringMatching(/still being checked/),
    });
    a.failed();
    b.abandoned();
    // ann (usernames compare lowercased) has one failure left; a success forgives it.
    begin('10.0.0.2', 'ann').failed();
    expect(attempts.begin('10.0.0.3', 'ANN')).toMatchObject({ allowed: false });
    limiters.byUsername.reset('ann');
    begin('10.0.0.1', 'ann').succeeded();
    // 10.0.0.1: ann's failure counted, bob's abandoned one and the success not.
    expect(limiters.byIp.check('10.0.0.1').allowed).toBe(true);
    begin('10.0.0.1', 'x').failed();
    begin('10.0.0.1', 'y').failed();
    expect(attempts.begin('10.0.0.1', 'z')).toMatchObject({
      allowed: false,
      message: expect.stringMatching(/too many failed logins; try again in \d+ s/),
    });
  });
});

describe.each(drivers)('users, sessions and roles (%s)', (driver) => {
  let fleet: Fleet;
  let admin: Awaited<ReturnType<typeof createUser>>;

  beforeAll(async () => {
    fleet = await startFleet(driver);
  });
  afterAll(async () => {
    await fleet?.close();
  });

  describe('the first admin', () => {
    beforeEach(async () => {
      await fleet.db.delete(users);
    });

    it('creates exactly one admin with ADMIN_PASSWORD, printing nothing', async () => {
      const printed: string[] = [];
      const print = (line: string) => printed.push(line);
      const results = await Promise.all([
        ensureAdmin(fleet.db, { password: PASSWORD }, logger, print),
        ensureAdmin(fleet.db, { password: PASSWORD }, logger, print),
      ]);
      expect(results.filter((r) => r.created)).toHaveLength(1);
      const rows = await fleet.db.select().from(users);
      expect(rows.map((r) => [r.username, r.role])).toEqual([['admin', 'admin']]);
      expect(printed).toEqual([]);
      const client = await loggedIn(fleet, 'admin');
      expect(await client.api.auth.me.query()).toMatchObject({ username: 'admin', role: 'admin' });
    });

    it('prints a one-time password once when there is no ADMIN_PASSWORD', async () => {
      const printed: string[] = [];
      const result = await ensureAdmin(fleet.db, {}, logger, (line) => printed.push(line));
      expect(printed).toHaveLength(1);
      const match = /^vfio-fleet: created user admin with one-time password (\S{12,})$/.exec(
        printed[0] ?? '',
      );
      expect(match?.[1]).toBe(result.oneTimePassword);
      const client = apiClient(fleet.url);
      await client.api.auth.login.mutate({ username: 'admin', password: match?.[1] ?? '' });
      // Later starts find users and do nothing, printing nothing.
      expect(await ensureAdmin(fleet.db, {}, logger, (line) => printed.push(line))).toEqual({
        created: false,
        oneTimePassword: null,
      });
      expect(printed).toHaveLength(1);
    });

    it('does nothing when the users table is not empty', async () => {
      await createUser(fleet.db, 'someone', 'viewer');
      const printed: string[] = [];
      const result = await ensureAdmin(fleet.db, { password: PASSWORD }, logger, (line) =>
        printed.push(line),
      );
      expect(result.created).toBe(false);
      expect((await fleet.db.select().from(users)).map((r) => r.username)).toEqual(['someone']);
      expect(printed).toEqual([]);
    });
  });

  describe('sessions and roles', () => {
    beforeAll(async () => {
      await fleet.db.delete(users);
      admin = await createUser(fleet.db, 'root-admin', 'admin');
      await createUser(fleet.db, 'vera', 'viewer');
      await createUser(fleet.db, 'otto', 'operator');
    });

    it('logs in with an httpOnly, SameSite, Path=/ cookie, answers me, and logs out', async () => {
      const client = apiClient(fleet.url);
      const me = await client.api.auth.login.mutate({ username: 'vera', password: PASSWORD });
      expect(me).toMatchObject({ username: 'vera', role: 'viewer' });
      const cookie = client.lastSetCookie ?? '';
      expect(cookie).toMatch(/^vfio_fleet_session=[A-Za-z0-9_-]{43};/);
      expect(cookie).toMatch(/; HttpOnly(;|$)/);
      expect(cookie).toMatch(/; SameSite=(Lax|Strict)(;|$)/);
      expect(cookie).toMatch(/; Path=\/(;|$)/);
      expect(cookie).toMatch(/; Max-Age=4(3199|3200)(;|$)/);
      expect(cookie).not.toMatch(/Secure/);
      // Only the token's hash is stored.
      const token = (client.cookie ?? '').split('=')[1] ?? '';
      const stored = await fleet.db.select().from(sessions);
      expect(stored.some((s) => s.tokenHash === token)).toBe(false);

      expect(await client.api.auth.me.query()).toMatchObject({ username: 'vera', role: 'viewer' });
      const oldCookie = client.cookie;
      await client.api.auth.logout.mutate();
      expect(client.lastSetCookie).toMatch(/^vfio_fleet_session=;.*Max-Age=0/);
      expect(client.cookie).toBeNull();
      expect((await failure(client.api.auth.me.query())).code).toBe('UNAUTHORIZED');
      // The old cookie is revoked server-side, not just forgotten by this client.
      client.cookie = oldCookie;
      expect((await failure(client.api.auth.me.query())).code).toBe('UNAUTHORIZED');
    });

    it('marks the cookie Secure when the request came over https (X-Forwarded-Proto)', async () => {
      const client = await loggedIn(fleet, 'vera', { 'x-forwarded-proto': 'https' });
      expect(client.lastSetCookie).toMatch(/; Secure(;|$)/);
    });

    it('answers an unknown user and a wrong password the same way', async () => {
      const client = apiClient(fleet.url);
      const wrong = await failure(
        client.api.auth.login.mutate({ username: 'otto', password: 'not the password' }),
      );
      const unknown = await failure(
        client.api.auth.login.mutate({ username: 'nobody-here', password: 'not the password' }),
      );
      expect(wrong).toEqual(unknown);
      expect(wrong).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
      expect(client.lastSetCookie).toBeNull();
    });

    it('rate-limits a username after repeated failures, even for the right password', async () => {
      await createUser(fleet.db, 'target', 'viewer');
      const client = apiClient(fleet.url);
      for (let i = 0; i < 5; i += 1) {
        const f = await failure(
          client.api.auth.login.mutate({ username: 'target', password: `guess-${i}` }),
        );
        expect(f.code).toBe('UNAUTHORIZED');
      }
      const limited = await failure(
        client.api.auth.login.mutate({ username: 'target', password: PASSWORD }),
      );
      expect(limited).toMatchObject({ code: 'TOO_MANY_REQUESTS', status: 429 });
      expect(limited.message).toMatch(/try again in \d+ s/);
      // Other users are not locked out by it.
      await loggedIn(fleet, 'otto');
    });

    it('refuses every procedure but login to an anonymous caller', async () => {
      const { api } = apiClient(fleet.url);
      const hostId = '00000000-0000-4000-8000-000000000000';
      const calls: (() => Promise<unknown>)[] = [
        () => api.auth.me.query(),
        () => api.auth.logout.mutate(),
        () => api.fleet.summary.query({}),
        () => api.fleet.capacity.query({}),
        () => api.hosts.list.query({}),
        () => api.hosts.get.query({ hostId }),
        () => api.devices.search.query({}),
        () => api.groups.get.query({ hostId, group: 1 }),
        () => api.jobs.list.query({}),
        () => api.jobs.preview.query({ hostId, address: '0000:01:00.0', target: 'vfio' }),
        () => api.tokens.create.mutate({ ttlHours: 1 }),
        () => api.tokens.list.query({}),
        () => api.agents.revoke.mutate({ hostId }),
        () => api.users.list.query({}),
        () =>
          api.users.changePassword.mutate({ currentPassword: 'x', newPassword: 'y'.repeat(12) }),
        () => api.audit.list.query({}),
      ];
      for (const call of calls) {
        expect(await failure(call())).toMatchObject({ code: 'UNAUTHORIZED', status: 401 });
      }
    });

    it('refuses a viewer jobs, tokens, users and audit (FORBIDDEN), and lets it read', async () => {
      const { api } = await loggedIn(fleet, 'vera');
      const hostId = '00000000-0000-4000-8000-000000000000';
      const forbidden: (() => Promise<unknown>)[] = [
        () =>
          api.jobs.create.mutate({
            hostId,
            address: '0000:01:00.0',
            target: 'vfio',
            acknowledge: true,
            previewHash: 'x',
          }),
        () => api.jobs.cancel.mutate({ jobId: hostId }),
        () => api.tokens.create.mutate({ ttlHours: 1 }),
        () => api.tokens.list.query({}),
        () => api.users.list.query({}),
        () => api.users.create.mutate({ username: 'x', password: 'y'.repeat(12), role: 'admin' }),
        () => api.audit.list.query({}),
        () => api.agents.revoke.mutate({ hostId }),
      ];
      for (const call of forbidden) {
        expect(await failure(call())).toMatchObject({ code: 'FORBIDDEN', status: 403 });
      }
      expect((await api.fleet.summary.query({})).hosts.total).toBe(0);
      expect((await api.jobs.list.query({})).items).toEqual([]);
      // An operator reads the audit trail, but does not administer.
      const operator = await loggedIn(fleet, 'otto');
      await operator.api.audit.list.query({ limit: 10 });
      expect((await failure(operator.api.users.list.query({}))).code).toBe('FORBIDDEN');
    });

    it('lets an admin create users, change roles and disable them, never the last admin', async () => {
      const { api } = await loggedIn(fleet, 'root-admin');
      const created = await api.users.create.mutate({
        username: 'newbie',
        password: PASSWORD,
        role: 'viewer',
      });
      expect(created).toMatchObject({ username: 'newbie', role: 'viewer', disabledAt: null });
      expect(
        await failure(
          api.users.create.mutate({ username: 'newbie', password: PASSWORD, role: 'viewer' }),
        ),
      ).toMatchObject({ code: 'CONFLICT' });
      const short = await failure(
        api.users.create.mutate({ username: 'shorty', password: 'short', role: 'viewer' }),
      );
      expect(short).toMatchObject({ code: 'BAD_REQUEST', fields: ['password'] });

      const newbie = await loggedIn(fleet, 'newbie');
      expect(await newbie.api.auth.me.query()).toMatchObject({ role: 'viewer' });
      await api.users.setRole.mutate({ userId: created.id, role: 'operator' });
      // The role is read per request: the open session has it at once.
      expect(await newbie.api.auth.me.query()).toMatchObject({ role: 'operator' });

      await api.users.disable.mutate({ userId: created.id });
      expect((await failure(newbie.api.auth.me.query())).code).toBe('UNAUTHORIZED');
      expect(
        await failure(
          apiClient(fleet.url).api.auth.login.mutate({ username: 'newbie', password: PASSWORD }),
        ),
      ).toMatchObject({ code: 'UNAUTHORIZED' });
      const open = await fleet.db.select().from(sessions).where(eq(sessions.userId, created.id));
      expect(open.every((s) => s.revokedAt !== null)).toBe(true);

      expect(await failure(api.users.disable.mutate({ userId: admin.id }))).toMatchObject({
        code: 'CONFLICT',
      });
      expect(
        await failure(api.users.setRole.mutate({ userId: admin.id, role: 'viewer' })),
      ).toMatchObject({ code: 'CONFLICT' });

      const listed = await api.users.list.query({ limit: 200 });
      expect(listed.items.map((u) => u.username)).toContain('newbie');
      expect(JSON.stringify(listed)).not.toContain('scrypt$');

      const audit = await fleet.db.select().from(auditLog);
      const actions = audit.filter((a) => a.username === 'root-admin').map((a) => a.action);
      expect(actions).toEqual(
        expect.arrayContaining(['user-created', 'user-role-changed', 'user-disabled']),
      );
    });

    it('changes a password for oneself, with the current one, and logs out other sessions', async () => {
      await createUser(fleet.db, 'changer', 'viewer');
      const first = await loggedIn(fleet, 'changer');
      const second = await loggedIn(fleet, 'changer');
      expect(
        await failure(
          first.api.users.changePassword.mutate({
            currentPassword: 'wrong',
            newPassword: 'n'.repeat(16),
          }),
        ),
      ).toMatchObject({ code: 'FORBIDDEN' });
      await first.api.users.changePassword.mutate({
        currentPassword: PASSWORD,
        newPassword: 'n'.repeat(16),
      });
      expect(await first.api.auth.me.query()).toMatchObject({ username: 'changer' });
      expect((await failure(second.api.auth.me.query())).code).toBe('UNAUTHORIZED');
      await apiClient(fleet.url).api.auth.login.mutate({
        username: 'changer',
        password: 'n'.repeat(16),
      });
    });

    it('refuses procedures that check or hash a password inside a batch, and counts a wrong current password', async () => {
      await createUser(fleet.db, 'batcher', 'viewer');
      const client = await loggedIn(fleet, 'batcher');
      const change = { currentPassword: 'wrong', newPassword: 'n'.repeat(16) };
      const res = await fetch(
        `${fleet.url}/api/trpc/users.changePassword,users.changePassword?batch=1`,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', cookie: client.cookie ?? '' },
          body: JSON.stringify({ 0: change, 1: { ...change, currentPassword: PASSWORD } }),
        },
      );
      expect(res.status).toBe(400);
      const each = (await res.json()) as { error: { message: string } }[];
      expect(each.map((e) => e.error.message)).toEqual([
        'users.changePassword must be called on its own, not in a batch (this request has 2 calls)',
        'users.changePassword must be called on its own, not in a batch (this request has 2 calls)',
      ]);
      // Alone, wrong current passwords count against the user like failed logins.
      for (let i = 0; i < 5; i += 1) {
        expect((await failure(client.api.users.changePassword.mutate(change))).code).toBe(
          'FORBIDDEN',
        );
      }
      expect(await failure(client.api.users.changePassword.mutate(change))).toMatchObject({
        code: 'TOO_MANY_REQUESTS',
      });
    });

    it('keeps the default login limits: 5 per username', () => {
      const limits = defaultLoginLimiters();
      for (let i = 0; i < 5; i += 1) limits.byUsername.hit('u');
      expect(limits.byUsername.check('u').allowed).toBe(false);
    });
  });
});
