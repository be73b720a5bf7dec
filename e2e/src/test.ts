/**
 * The suite's `test`: Playwright's, with the project's fleet (what global setup started and
 * expects) and helpers to sign in through the login page and to save a named screenshot.
 */
import path from 'node:path';
import { test as base, expect, type Page } from '@playwright/test';
import { type FleetInfo, readFleetInfo, SCREENSHOTS_DIR } from './fleet-info';

export { expect, type Page };

type Role = keyof FleetInfo['users'];

export interface E2eFixtures {
  fleet: FleetInfo;
  /**
   * Opens `next` (default /) signed in as admin, operator or viewer: with the role's session from
   * setup (the login form itself is tested in 01-login.spec.ts).
   */
  signIn: (role: Role, next?: string) => Promise<void>;
  /**
   * Saves a screenshot as test-results/screenshots/<name>.png (postgres: under postgres/): the
   * full page, or only the viewport (a modal dialog's backdrop covers only the viewport).
   */
  shot: (name: string, options?: { fullPage?: boolean }) => Promise<void>;
  /**
   * What the browser refused under the server's Content-Security-Policy, as console errors with
   * the page they came from. Automatic: every test fails if its pages logged one.
   */
  cspViolations: string[];
}

/** Signs `page` in through the login form, landing on `next`. */
export async function signInAs(
  page: Page,
  fleet: FleetInfo,
  role: Role,
  next = '/',
): Promise<void> {
  const user = fleet.users[role];
  await page.goto(`${fleet.url}/login?next=${encodeURIComponent(next)}`);
  await page.getByLabel('Username').fill(user.username);
  await page.getByLabel('Password').fill(user.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // Signed in: the shell shows who, and the login form is gone.
  await expect(page.getByRole('navigation', { name: 'Main' })).toBeVisible();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
}

export const test = base.extend<E2eFixtures>({
  // biome-ignore lint/correctness/noEmptyPattern: Playwright reads a fixture's dependencies from this pattern, and this one has none.
  fleet: async ({}, use, testInfo) => {
    await use(readFleetInfo(testInfo.project.name));
  },
  signIn: async ({ page, fleet }, use) => {
    await use(async (role, next = '/') => {
      const [name = '', value = ''] = fleet.sessions[role].split(/=(.*)/s);
      await page.context().addCookies([{ name, value, url: fleet.url }]);
      await page.goto(`${fleet.url}${next}`);
      await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
    });
  },
  cspViolations: [
    async ({ page }, use) => {
      const violations: string[] = [];
      page.on('console', (message) => {
        if (message.type() === 'error' && /Content.Security.Policy/i.test(message.text())) {
          violations.push(`${page.url()}: ${message.text()}`);
        }
      });
      await use(violations);
      expect(violations, 'Content-Security-Policy violations').toEqual([]);
    },
    { auto: true },
  ],
  shot: async ({ page }, use, testInfo) => {
    await use(async (name, options) => {
      const dir =
        testInfo.project.name === 'pglite'
          ? SCREENSHOTS_DIR
          : path.join(SCREENSHOTS_DIR, testInfo.project.name);
      const file = path.join(dir, `${name}.png`);
      await page.screenshot({ path: file, fullPage: options?.fullPage ?? true });
      await testInfo.attach(name, { path: file, contentType: 'image/png' });
    });
  },
});
