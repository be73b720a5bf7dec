// Signing in through the login page: a wrong password is refused with a visible error and no
// session; the right one lands on the overview with the user's name in the shell.
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
