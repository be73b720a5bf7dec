// The API's edges over real HTTP, as a browser page on another site or a hand-made request would
// reach them: cross-site POSTs (a form or fetch from evil.example carrying the admin's cookie),
// bodies other than JSON, and forged pagination cursors.
import { enrollmentTokens, users } from '@vfio-fleet/db';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crossSiteReason } from '../src/api/request-guard';
import { hashPassword } from '../src/auth/passwords';
import { encodeCursor } from '../src/fleet/cursor';
import { type ApiClient, apiClient, failure } from './helpers/api-client';
import { drivers, type Fleet, startFleet } from './helpers/harness';

const PASSWORD = 'correct horse battery staple';

describe('crossSiteReason', () => {
  it('passes the console itself and non-browser clients, and names anything else', () => {
    const host = 'fleet.example:3000';
    for (const headers of [
      { host },
      { host, origin: 'http://fleet.example:3000' },
      { host, origin: 'https://fleet.example:3000' },
      { host, 'sec-fetch-site': 'same-origin', origin: 'https://elsewhere.example' },
      { host, 'sec-fetch-site': 'none' },
    ]) {
      expect(crossSiteReason(headers), JSON.stringify(headers)).toBeNull();
    }
    for (const headers of [
      { host, origin: 'https://evil.example' },
      { host, origin: 'http://fleet.example:3001' },
      { host, origin: 'http://fleet.example:3000.evil.example' },
      { host, origin: 'null' },
      { host, origin: 'file://' },
      { origin: 'http://fleet.example:3000' },
      { host, 'sec-fetch-site': 'cross-site' },
      { host, 'sec-fetch-site': 'same-site', origin: 'http://fleet.example:3000' },
    ]) {
      expect(crossSiteReason(headers), JSON.stringify(headers)).toMatch(
        /may not change anything here$/,
      );
    }
    expect(crossSiteReason({ host, origin: 'https://evil.example' })).toBe(
      'a request from "https://evil.example" (not this console\'s origin) may not change anything here',
    );
  });
});

describe.each(drivers)('API edges (%s)', (driver) => {
  let fleet: Fleet;
  let admin: ApiClient;

  beforeAll(async () => {
    fleet = await startFleet(driver);
    await fleet.db
      .insert(users)
      .values({ username: 'ada', role: 'admin', passwordHash: await hashPassword(PASSWORD) });
    admin = apiClient(fleet.url);
    await admin.api.auth.login.mutate({ username: 'ada', password: PASSWORD });
  });
  afterAll(async () => {
    await fleet?.close();
  });

  const tokenCount = async () => (await fleet.db.select().from(enrollmentTokens)).length;

  /** tokens.create as a browser would POST it, with the admin's cookie and `headers`. */
  const createToken = (headers: Record<string, string>, body = '{"ttlHours":1}') =>
    fetch(`${fleet.url}/api/trpc/tokens.create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie: admin.cookie ?? '', ...headers },
      body,
    });

  it('refuses a cross-site POST to a mutation with 403, changing nothing', async () => {
    const before = await tokenCount();
    const crossSite: Record<string, string>[] = [
      { origin: 'https://evil.example' },
      { origin: 'null' },
      { origin: `${fleet.url}.evil.example` },
      { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' },
      // A sibling subdomain is same-site, not same-origin: refused too.
      { 'sec-fetch-site': 'same-site' },
      // The browser's Sec-Fetch-Site is believed over an Origin that happens to match.
      { 'sec-fetch-site': 'cross-site', origin: fleet.url },
    ];
    for (const headers of crossSite) {
      const res = await createToken(headers);
      expect(res.status, JSON.stringify(headers)).toBe(403);
      const body = (await res.json()) as { error: { message: string; data: { code: string } } };
      expect(body.error.data.code).toBe('FORBIDDEN');
      expect(body.error.message).toMatch(/may not change anything here/);
    }
    expect(await tokenCount()).toBe(before);
  });

  it('accepts a POST from the console itself and from clients that are no browser page', async () => {
    const before = await tokenCount();
    const sameOrigin: Record<string, string>[] = [
      { origin: fleet.url, 'sec-fetch-site': 'same-origin' },
      { origin: fleet.url },
      { 'sec-fetch-site': 'same-origin' },
      {},
    ];
    for (const headers of sameOrigin) {
      const res = await createToken(headers);
      expect(res.status, JSON.stringify(headers)).toBe(200);
    }
    expect(await tokenCount()).toBe(before + 4);
  });

  it('refuses multipart, text/plain and other non-JSON bodies (a cross-site form needs no preflight for them)', async () => {
    const form = new FormData();
    form.set('ttlHours', '1');
    const bodies: { body: BodyInit; type?: string }[] = [
      { body: form },
      { body: 'ttlHours=1', type: 'application/x-www-form-urlencoded' },
      { body: '{"ttlHours":1}', type: 'text/plain' },
      { body: new Uint8Array([1, 2, 3]), type: 'application/octet-stream' },
    ];
    const before = await tokenCount();
    for (const { body, type } of bodies) {
      const res = await fetch(`${fleet.url}/api/trpc/auth.logout`, {
        method: 'POST',
        headers: {
          cookie: admin.cookie ?? '',
          ...(type === undefined ? {} : { 'content-type': type }),
        },
        body,
      });
      expect(res.status, type ?? 'multipart').toBe(415);
      const text = await res.text();
      expect(text).toMatch(/application\/json|content-type/i);
    }
    const multipart = await fetch(`${fleet.url}/api/trpc/tokens.create`, {
      method: 'POST',
      headers: { cookie: admin.cookie ?? '' },
      body: form,
    });
    expect(multipart.status).toBe(415);
    expect(await tokenCount()).toBe(before);
    // The session survived every one of them.
    expect(await admin.api.auth.me.query()).toMatchObject({ username: 'ada' });
  });

  it('answers a forged cursor with BAD_REQUEST naming the cursor, never a 500', async () => {
    const uuid = '00000000-0000-4000-8000-000000000000';
    // Wrong for every list below: a part of the wrong kind, the wrong length, not a cursor.
    const forged = [
      encodeCursor(['host', 'not-a-uuid']),
      encodeCursor([42.5, uuid]),
      encodeCursor([null, null]),
      encodeCursor(['a', 'b', 'c', 'd']),
      'not base64 json',
    ];
    const { api } = admin;
    const calls = (cursor: string): [string, () => Promise<unknown>][] => [
      ['hosts.list hostname', () => api.hosts.list.query({ cursor, sort: 'hostname' })],
      ['hosts.list lastSeen', () => api.hosts.list.query({ cursor, sort: 'lastSeen' })],
      ['hosts.list devices', () => api.hosts.list.query({ cursor, sort: 'devices' })],
      ['devices.search', () => api.devices.search.query({ cursor })],
      ['tokens.list', () => api.tokens.list.query({ cursor })],
      ['agents.list', () => api.agents.list.query({ cursor })],
      ['users.list', () => api.users.list.query({ cursor })],
    ];
    const targeted: [string, () => Promise<unknown>][] = [
      // The query casts these parts (::bigint, ::timestamptz, ::uuid).
      [
        'lastSeen digits',
        () => api.hosts.list.query({ cursor: encodeCursor(['12abc', uuid]), sort: 'lastSeen' }),
      ],
      [
        'token time',
        () =>
          api.tokens.list.query({ cursor: encodeCursor(['2024-13-45T00:00:00.000000Z', uuid]) }),
      ],
      ['agent time', () => api.agents.list.query({ cursor: encodeCursor(['yesterday', 'agent']) })],
    ];
    for (const [name, call] of [...forged.flatMap(calls), ...targeted]) {
      const refused = await failure(call()).catch((error: unknown) => {
        throw new Error(`${name}: ${String(error)}`);
      });
      expect(refused, name).toMatchObject({ code: 'BAD_REQUEST', status: 400 });
      expect(refused.message).toMatch(/^invalid cursor: pass back the nextCursor/);
    }
  });
});
