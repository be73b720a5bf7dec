// Two hosts that report one hostname (a cloned image, a reused name) looked the same in the hosts
// list and on their pages. A second agent joins under the hostname of a fleet host (its own
// machine-id); both rows, and the new host's page, show a short id that tells them apart. At the
// end of the suite (with 11): the extra host stays in the fleet (offline) after this test.
import path from 'node:path';
import { buildHostTree, scenario } from '@vfio-fleet/host-fixtures';
import { signedIn } from '../src/api-client';
import { type Child, recordPid, startAgentProcess, waitFor } from '../src/processes';
import { expect, test } from '../src/test';

const TWIN_MACHINE_ID = 'e2e1'.repeat(8);

test('hosts with one hostname are told apart in the list and on their pages', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  test.setTimeout(240_000);
  const original = fleet.hosts.find((h) => h.scenario === 'iommu-off');
  if (original === undefined) throw new Error('the fleet has no iommu-off host');
  const hostname = original.hostname;
  const root = path.join(path.dirname(fleet.faultyHost.root), 'same-hostname');
  const stateDir = path.join(path.dirname(fleet.faultyHost.stateDir), 'same-hostname');
  await buildHostTree(root, { ...scenario('iommu-off'), hostname, machineId: TWIN_MACHINE_ID });

  const admin = await signedIn(fleet.url, fleet.users.admin.username, fleet.users.admin.password);
  const { token } = await admin.tokens.create.mutate({
    label: 'e2e same hostname',
    ttlHours: 1,
    maxUses: 1,
  });
  let agent: Child | null = null;
  try {
    agent = startAgentProcess([
      '--server',
      fleet.url,
      '--token',
      token,
      '--root',
      root,
      '--interval',
      '1',
      '--state-dir',
      stateDir,
      ...fleet.agentExtraArgs,
    ]);
    recordPid(fleet.pidsFile, agent.pid, stateDir);
    const twinId = await waitFor(
      `a second ${hostname} online`,
      async () => {
        const { items } = await admin.hosts.list.query({ search: hostname, limit: 10 });
        const twin = items.find((h) => h.id !== original.hostId && h.hostname === hostname);
        return twin?.state === 'online' && twin.devices.total > 0 ? twin.id : undefined;
      },
      60_000,
      () => agent?.output() ?? '',
    );

    await signIn('viewer', '/hosts');
    await page.getByLabel('Search hostname').fill(hostname);
    const rows = page.getByRole('row').filter({ hasText: hostname });
    await expect(rows).toHaveCount(2);
    const twinRow = rows.filter({ hasText: `machine-id ${TWIN_MACHINE_ID.slice(0, 8)}` });
    await expect(twinRow).toHaveCount(1);
    // The original shows its own machine-id's start: not the twin's, and not nothing.
    const originalRow = rows.filter({
      has: page.locator(`a[href="/hosts/${original.hostId}"]`),
    });
    await expect(originalRow).toContainText(/machine-id [0-9a-f]{8}/);
    await expect(originalRow).not.toContainText(`machine-id ${TWIN_MACHINE_ID.slice(0, 8)}`);
    await shot('hosts-same-hostname');

    await twinRow.getByRole('link', { name: hostname }).click();
    await expect(page).toHaveURL(new RegExp(`/hosts/${twinId}$`));
    await expect(page.getByRole('heading', { level: 1, name: hostname })).toBeVisible();
    await expect(page.getByText(`machine-id ${TWIN_MACHINE_ID.slice(0, 8)}`)).toBeVisible();
    const facts = page.getByRole('region', { name: 'Host facts' });
    await expect(facts).toContainText(TWIN_MACHINE_ID);
    await expect(facts).toContainText(twinId);
  } finally {
    await agent?.stop(5_000);
  }
});
