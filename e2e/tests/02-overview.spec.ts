// The overview and capacity pages: hosts online, devices bound / ready / blocked and the per-type
// capacity equal what the fixture hosts imply (from each agent's own `scan --json`), and the
// capacity CSV holds the same rows.
import { readFile } from 'node:fs/promises';
import { parseCsv } from '../src/csv';
import { expect, test } from '../src/test';

test('the overview shows the fleet the fixtures imply', async ({ page, fleet, signIn, shot }) => {
  const { expected } = fleet;
  await signIn('viewer');
  await expect(page.getByRole('heading', { name: 'Fleet overview', level: 1 })).toBeVisible();
  const stat = (text: string) => page.getByRole('link', { name: `${text}: show them` });
  await expect(stat(`${expected.hostsOnline} hosts online`)).toBeVisible();
  await expect(stat('0 hosts offline')).toBeVisible();
  await expect(stat(`${expected.devices.bound} devices bound to vfio`)).toBeVisible();
  await expect(stat(`${expected.devices.ready} devices ready to pass through`)).toBeVisible();
  await expect(stat(`${expected.devices.blocked} devices blocked`)).toBeVisible();
  await expect(stat(`${expected.devices.total} devices in total`)).toBeVisible();
  // The IOMMU-off host blocks every one of its devices: it is a top reason, with its remedy.
  const reasons = page.getByRole('region', { name: 'Top blocking reasons' });
  await expect(reasons.getByText('iommu-off', { exact: true })).toBeVisible();
  await expect(reasons).toContainText('Remedy:');
  // ...and that host needs attention.
  const legacy = fleet.hosts.find((h) => h.scenario === 'iommu-off');
  const attention = page.getByRole('region', { name: 'Hosts needing attention' });
  await expect(attention.getByRole('link', { name: legacy?.hostname ?? '?' })).toBeVisible();
  await shot('overview');

  // A number opens the matching device search.
  await stat(`${expected.devices.ready} devices ready to pass through`).click();
  await expect(page).toHaveURL(/\/devices\?status=ready/);
  const results = page.getByRole('table', { name: /^Devices, page 1/ });
  await expect(results.getByRole('row')).toHaveCount(expected.devices.ready + 1);
});

test('capacity per device type equals the fixtures, and its CSV has those rows', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  const { expected } = fleet;
  await signIn('viewer', '/capacity');
  await expect(page.getByRole('heading', { name: 'Capacity planning', level: 1 })).toBeVisible();
  const totals = page.getByRole('region', { name: 'Totals' });
  const total = (label: string) => totals.getByText(label, { exact: true }).locator('..');
  await expect(total('devices')).toHaveText(`${expected.devices.total}devices`);
  await expect(total('bound to vfio')).toHaveText(`${expected.devices.onVfio}bound to vfio`);
  await expect(total('ready now')).toHaveText(`${expected.devices.ready}ready now`);
  await expect(total('blocked')).toHaveText(`${expected.devices.blocked}blocked`);

  const table = page.getByRole('table', { name: 'Capacity by device type' });
  await expect(table.getByRole('rowheader')).toHaveCount(expected.types.length);
  for (const t of expected.types) {
    const row = table.getByRole('row').filter({
      has: page.getByRole('rowheader').filter({ hasText: `${t.vendorId}:${t.deviceId}` }),
    });
    const cells = row.getByRole('cell');
    // Class, hosts, then total, bound to vfio, ready now, blocked.
    await expect(cells.nth(2), `${t.vendorId}:${t.deviceId} total`).toHaveText(String(t.total));
    await expect(cells.nth(3), `${t.vendorId}:${t.deviceId} bound`).toHaveText(String(t.onVfio));
    await expect(cells.nth(4), `${t.vendorId}:${t.deviceId} ready`).toHaveText(String(t.ready));
    await expect(cells.nth(5), `${t.vendorId}:${t.deviceId} blocked`).toHaveText(String(t.blocked));
    // pci.ids names, not only hex ids (when the agents had pci.ids to read them from).
    if (t.deviceName !== null) {
      await expect(row.getByRole('rowheader')).toContainText(t.deviceName);
    }
  }
  await expect(page.getByRole('img', { name: /Devices by readiness/ })).toBeVisible();
  await shot('capacity');

  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Download CSV' }).click(),
  ]);
  expect(download.suggestedFilename()).toMatch(/\.csv$/);
  const file = await download.path();
  const rows = parseCsv(await readFile(file, 'utf8'));
  const [header, ...body] = rows;
  expect(header).toEqual(
    expect.arrayContaining(['vendor_id', 'device_id', 'total', 'bound', 'ready', 'blocked']),
  );
  const column = (name: string) => header?.indexOf(name) ?? -1;
  const csvTypes = body.map((r) => ({
    vendorId: r[column('vendor_id')],
    deviceId: r[column('device_id')],
    total: Number(r[column('total')]),
    onVfio: Number(r[column('bound')]),
    ready: Number(r[column('ready')]),
    blocked: Number(r[column('blocked')]),
  }));
  const key = (t: { vendorId?: string; deviceId?: string }) => `${t.vendorId}:${t.deviceId}`;
  expect([...csvTypes].sort((a, b) => key(a).localeCompare(key(b)))).toEqual(
    expected.types.map((t) => ({
      vendorId: t.vendorId,
      deviceId: t.deviceId,
      total: t.total,
      onVfio: t.onVfio,
      ready: t.ready,
      blocked: t.blocked,
    })),
  );
});
