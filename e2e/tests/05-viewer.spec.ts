// A viewer sees the fleet but no way to change it, and the server refuses a rebind even when the
// viewer's own browser session asks for one directly.
import { MLX5_VF } from '../src/fleet-info';
import { groupBox, rebindButtons } from '../src/host-page';
import { expect, test } from '../src/test';

test('the API answers FORBIDDEN to jobs.create with a viewer session', async ({
  page,
  fleet,
  signIn,
}) => {
  await signIn('viewer');
  const host = fleet.hosts.find((h) => h.scenario === 'mlx5-vf');
  expect(host).toBeDefined();
  // The browser context's cookie is the viewer's session: page.request sends it.
  const response = await page.request.post(`${fleet.url}/api/trpc/jobs.create`, {
    data: {
      hostId: host?.hostId,
      address: MLX5_VF,
      target: 'vfio',
      acknowledge: true,
      previewHash: 'viewer-cannot-have-one',
    },
  });
  expect(response.status()).toBe(403);
  const body = (await response.json()) as { error?: { data?: { code?: string } } };
  expect(body.error?.data?.code).toBe('FORBIDDEN');
});

test('a viewer finds no rebind control on a host page', async ({ page, fleet, signIn, shot }) => {
  const host = fleet.hosts.find((h) => h.scenario === 'mlx5-vf');
  if (host === undefined) throw new Error('no mlx5-vf host in the fleet');
  await signIn('viewer', `/hosts/${host.hostId}`);
  await expect(page.getByRole('heading', { name: host.hostname, level: 1 })).toBeVisible();
  // The whole host is there (every device in its group box, the ready VF too)...
  for (const device of host.devices) {
    await expect(
      groupBox(page, device.iommuGroup).getByRole('listitem', {
        name: device.address,
        exact: true,
      }),
    ).toBeVisible();
  }
  // ...and nothing that would queue a rebind, on any group.
  await expect(rebindButtons(page)).toHaveCount(0);
  await expect(page.getByRole('dialog')).toHaveCount(0);
  await shot('host-as-viewer');
});
