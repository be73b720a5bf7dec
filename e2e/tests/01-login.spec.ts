// Signing in through the login page: a wrong password is refused with a visible error and no
// session; the right one lands on the overview with the user's name in the shell, and only ever on
// the console's own origin; and every page runs under the server's Content-Security-Policy.
import { expect, signInAs, test } from '../src/test';

test('a wrong password shows an error and keeps the user on the login page', async ({
  page,
  fleet,
  shot,
}) => {
  await page.goto(`${fleet.url}/login`);
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  await shot('login');
  await page.getByLabel('Username').fill(fleet.users.admin.username);
  await page.getByLabel('Password').fill('not the admin password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  // Next.js also renders an (empty) role=alert route announcer once the page has hydrated: the
  // login error is the alert that says so.
  await expect(
    page.getByRole('alert').filter({ hasText: 'wrong username or password' }),
  ).toBeVisible();
  await expect(page).toHaveURL(/\/login/);
  await expect(page.getByRole('navigation', { name: 'Main' })).toHaveCount(0);
  // No session was made: the API still refuses this browser.
  const me = await page.request.get(`${fleet.url}/api/trpc/auth.me`);
  expect(me.status()).toBe(401);
});

test('the right password signs in and shows who is signed in', async ({ page, fleet }) => {
  await signInAs(page, fleet, 'admin');
  await expect(page).toHaveURL(`${fleet.url}/`);
  await expect(page.getByRole('banner')).toContainText(fleet.users.admin.username);
  await expect(page.getByRole('banner')).toContainText('admin');
});

test('a next= that points at another site still lands on the console after signing in', async ({
  page,
  fleet,
}) => {
  const user = fleet.users.admin;
  // What a browser reads as another host although it starts like a path (and one that is).
  for (const next of ['/%5Cevil.example/x', '/%09/evil.example/x', '//evil.example/x']) {
    await page.goto(`${fleet.url}/login?next=${next}`);
    await page.getByLabel('Username').fill(user.username);
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page.getByRole('navigation', { name: 'Main' }), next).toBeVisible();
    expect(new URL(page.url()).origin, next).toBe(fleet.url);
    await expect(page).toHaveURL(`${fleet.url}/`);
  }
  // A page of the console is still where it goes.
  await page.goto(`${fleet.url}/login?next=${encodeURIComponent('/hosts?state=online')}`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page).toHaveURL(`${fleet.url}/hosts?state=online`);
});

test('every page runs under the Content-Security-Policy without a violation', async ({
  page,
  fleet,
  signIn,
  cspViolations,
}) => {
  await signIn('admin');
  const host = fleet.hosts[0];
  if (host === undefined) throw new Error('the fleet has no host');
  const pages = [
    '/',
    '/hosts',
    `/hosts/${host.hostId}`,
    '/devices',
    '/capacity',
    '/jobs',
    '/jobs/bulk',
    '/admin/tokens',
    '/admin/users',
    '/admin/audit',
    '/account',
    '/no-such-page',
  ];
  for (const path of pages) {
    const response = await page.goto(`${fleet.url}${path}`);
    const policy = (await response?.allHeaders())?.['content-security-policy'] ?? '';
    // A nonce of this response's own, and the page's scripts carry it.
    const nonce = /'nonce-([A-Za-z0-9+/=]+)'/.exec(policy)?.[1];
    expect(nonce, `${path}: ${policy}`).toBeDefined();
    expect(policy).toContain("frame-ancestors 'none'");
    expect(await page.locator(`script[nonce]`).count(), path).toBeGreaterThan(0);
    if (path !== '/no-such-page') {
      await expect(page.getByRole('heading', { level: 1 }).first(), path).toBeVisible();
    }
  }
  // Client-side navigation too (Next loads chunks and data without a new document).
  await page.goto(`${fleet.url}/`);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Hosts' }).click();
  await expect(page.getByRole('heading', { name: 'Hosts', level: 1 })).toBeVisible();
  expect(cspViolations).toEqual([]);
});
