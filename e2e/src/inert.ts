// What the hostile-string journeys check after each page: agent-supplied text stayed text.
import { expect, type Page } from './test';

/** Nothing the hostile text describes became an element, and none of its handlers ran. */
export async function expectInert(page: Page): Promise<void> {
  await expect(page.locator('img[src="x"], svg[onload], [onerror], [onfocus]')).toHaveCount(0);
  expect(await page.evaluate(() => Reflect.get(window, '__xss'))).toBeUndefined();
}
