// The other main pages as their users read them: the hosts list, device search, the job queue,
// and the admin pages (enrollment tokens with the exact agent command line, users, audit log).
import { MLX5_VF } from '../src/fleet-info';
import { expect, test } from '../src/test';

test('the hosts list has every host with its device counts', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  await signIn('viewer', '/hosts');
  await expect(page.getByRole('heading', { name: 'Hosts', level: 1 })).toBeVisible();
  const table = page.getByRole('table', { name: 'Hosts' });
  for (const host of fleet.hosts) {
    const row = table.getByRole('row').filter({
      has: page.getByRole('link', { name: host.hostname, exact: true }),
    });
    await expect(row).toHaveCount(1);
    const count = (status: 'bound' | 'ready' | 'blocked') =>
      String(host.devices.filter((d) => d.status === status).length);
    const cells = row.getByRole('cell');
    // Hostname, state, kernel, IOMMU, labels, then devices, bound, ready, blocked.
    await expect(cells.nth(1)).toHaveText('online');
    await expect(cells.nth(5)).toHaveText(String(host.devices.length));
    await expect(cells.nth(6)).toHaveText(count('bound'));
    await expect(cells.nth(7)).toHaveText(count('ready'));
    await expect(cells.nth(8)).toHaveText(count('blocked'));
  }
  await shot('hosts');
});

test('device search filters the fleet by type', async ({ page, fleet, signIn, shot }) => {
  const vfType = fleet.expected.types.find((t) => t.vendorId === '15b3' && t.deviceId === '101e');
  if (vfType === undefined) throw new Error('no ConnectX VF type in the fleet');
  await signIn('viewer', '/devices');
  await expect(page.getByRole('heading', { name: 'Devices', level: 1 })).toBeVisible();
  await page.getByLabel('Type (vendor:device)').fill('15b3:101e');
  await page.getByRole('button', { name: 'Search' }).click();
  await expect(page).toHaveURL(/type=15b3(%3A|:)101e/);
  const results = page.getByRole('table', { name: /^Devices, page 1/ });
  // The header row and one row per VF.
  await expect(results.getByRole('row')).toHaveCount(vfType.total + 1);
  await expect(results).toContainText('mlx5_core');
  await shot('devices');
});

test('the job queue lists jobs with their hosts', async ({ page, fleet, signIn, shot }) => {
  await signIn('operator', '/jobs');
  await expect(page.getByRole('heading', { name: 'Jobs', level: 1 })).toBeVisible();
  const mlx5 = fleet.hosts.find((h) => h.scenario === 'mlx5-vf');
  // The rebind journey ran before this file: its jobs are here.
  await expect(page.getByRole('link', { name: mlx5?.hostname ?? '?' }).first()).toBeVisible();
  await shot('jobs');
});

test('an admin creates an enrollment token and gets the exact agent command line', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  await signIn('admin', '/admin/tokens');
  await expect(page.getByRole('heading', { name: 'Enrollment', level: 1 })).toBeVisible();
  // The token global setup made for the fleet's agents, used by all of them.
  const tokens = page.getByRole('table', { name: 'Enrollment tokens' });
  await expect(tokens.getByRole('row').filter({ hasText: 'e2e fleet' })).toContainText(
    `${fleet.hosts.length} / ${fleet.hosts.length}`,
  );
  await page.getByLabel('Token label').fill('rack 12 GPU nodes');
  await page.getByRole('button', { name: 'Create token' }).click();
  const created = page.getByRole('region', { name: /Token created/ });
  await expect(created).toBeVisible();
  await expect(created).toContainText(
    new RegExp(
      `VFIO_FLEET_TOKEN=\\S+ vfio-fleet-agent run --server ${fleet.url.replace(/[.]/g, '\\.')}`,
    ),
  );
  await expect(created.getByRole('button', { name: 'Copy command' })).toBeVisible();
  await shot('admin-tokens');
  await created.getByRole('button', { name: 'Done' }).click();
  await expect(tokens.getByRole('row').filter({ hasText: 'rack 12 GPU nodes' })).toBeVisible();
});

test('an admin sees the users and their roles', async ({ page, fleet, signIn, shot }) => {
  await signIn('admin', '/admin/users');
  await expect(page.getByRole('heading', { name: 'Users', level: 1 })).toBeVisible();
  const users = page.getByRole('table', { name: 'Users' });
  for (const role of ['admin', 'operator', 'viewer'] as const) {
    await expect(
      users.getByRole('row').filter({ hasText: fleet.users[role].username }).first(),
    ).toContainText(role);
  }
  await shot('admin-users');
});

test('the audit log records the setup and the rebinds', async ({ page, fleet, signIn, shot }) => {
  const mlx5 = fleet.hosts.find((h) => h.scenario === 'mlx5-vf');
  if (mlx5 === undefined) throw new Error('no mlx5-vf host in the fleet');
  await signIn('admin', '/admin/audit');
  await expect(page.getByRole('heading', { name: 'Audit log', level: 1 })).toBeVisible();
  const log = page.getByRole('table', { name: /Audit log entries/ });
  const entry = (...texts: (string | RegExp)[]) =>
    texts.reduce((rows, text) => rows.filter({ hasText: text }), log.getByRole('row')).first();
  // Setup, as admin: the users and the fleet's enrollment token.
  await expect(entry('User created', 'operator as operator')).toContainText('admin');
  await expect(entry('User created', 'viewer as viewer')).toContainText('admin');
  await expect(entry('Enrollment token created', 'e2e fleet')).toContainText('admin');
  // The rebind journey: who asked, and how each job ended with the drivers before and after.
  await expect(entry('Job created', mlx5.hostname, MLX5_VF)).toContainText('operator');
  // Drivers before → after (the arrow is drawn, " to " is there for screen readers).
  await expect(entry('Job finished', MLX5_VF, /mlx5_core\W+(to\W+)?mlx5_vfio_pci/)).toContainText(
    'succeeded',
  );
  await expect(entry('Job finished', MLX5_VF, /mlx5_vfio_pci\W+(to\W+)?mlx5_core/)).toContainText(
    'succeeded',
  );
  await shot('admin-audit');
});
