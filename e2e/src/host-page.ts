/**
 * Locators for the host page as a user reads it: an IOMMU group is a region named "IOMMU group N"
 * holding one list item per device (named by its PCI address), each with a Driver fact.
 */
import type { Locator, Page } from '@playwright/test';

export function groupBox(page: Page, group: number | null): Locator {
  return page.getByRole('region', {
    name: group === null ? 'No IOMMU group' : `IOMMU group ${group}`,
    exact: true,
  });
}

export function deviceCard(page: Page, address: string): Locator {
  return page.getByRole('listitem', { name: address, exact: true });
}

/** The device's current driver (the value of its "Driver" fact, not the vfio driver it would get). */
export function driverOf(page: Page, address: string): Locator {
  return deviceCard(page, address).locator('dt:text-is("Driver") + dd');
}

/** Whether the device's binding survives a reboot (its "At reboot" fact; absent off vfio). */
export function bootFateOf(page: Page, address: string): Locator {
  return deviceCard(page, address).locator('dt:text-is("At reboot") + dd');
}

/** The buttons that would queue a job anywhere on the page (or in one part of it). */
export function rebindButtons(scope: Page | Locator): Locator {
  return scope.getByRole('button', {
    name: /move .*to vfio|restore host drivers|rebind|keep across reboots/i,
  });
}

/** The job page's state badge: the element right after the "Job …" heading. */
export function jobState(page: Page): Locator {
  return page
    .getByRole('heading', { level: 1, name: /^Job / })
    .locator('xpath=following-sibling::*[1]');
}
