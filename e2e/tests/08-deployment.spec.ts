// Deploying the agent, as an admin and a viewer see it: a new enrollment token comes with one
// copy-paste command per install path (the install script, the .deb, an Ansible playbook), each
// holding the token, the labels and the digest of what this server hands out; the server serves
// the install script and the files next to the UI; the hosts list, its "Agent versions" panel and
// the host page show which agent version each host runs.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { repoRoot } from '../src/processes';
import { expect, test } from '../src/test';

const manifestSchema = z.object({
  version: z.string(),
  files: z.array(z.object({ name: z.string(), kind: z.string(), sha256: z.string() })),
});

/** The version the server ships, as it reads it: apps/agent's package.json. */
const CURRENT = z
  .object({ version: z.string() })
  .parse(JSON.parse(readFileSync(path.join(repoRoot, 'apps/agent/package.json'), 'utf8'))).version;

test('an admin creates a token and gets the three install commands with its token and labels', async ({
  page,
  fleet,
  signIn,
  request,
  shot,
}) => {
  const manifest = manifestSchema.parse(
    await (await request.get(`${fleet.url}/downloads/manifest.json`)).json(),
  );
  const deb = manifest.files.find((f) => f.kind === 'deb');
  if (deb === undefined) throw new Error('the server lists no .deb');

  await signIn('admin', '/admin/tokens');
  await page.getByLabel('Token label').fill('e2e deployment');
  await page.getByLabel('Host labels').fill("rack=r42\nnote=gold's tier");
  await page.getByRole('button', { name: 'Create token' }).click();
  const created = page.getByRole('region', { name: /Token created/ });
  await expect(created).toBeVisible();
  const line = await created.locator('pre').first().textContent();
  const token = /^VFIO_FLEET_TOKEN=(\S+) /.exec(line ?? '')?.[1];
  if (token === undefined) throw new Error(`no token in ${line}`);

  const script = created.getByRole('figure', { name: /^Install script/ });
  // A value with spaces cannot travel in the agent's env file: left out of all three, and said so.
  await expect(script.locator('pre')).toHaveText(
    `curl -fsSL ${fleet.url}/install.sh | sudo sh -s -- --token ${token} --label rack=r42`,
  );
  await expect(created.getByRole('note')).toContainText(
    'Left out of these commands: the label note',
  );
  const debSteps = created.getByRole('figure', { name: /^Debian package/ });
  await expect(debSteps).toContainText(`curl -fsSLO ${fleet.url}/downloads/${deb.name}`);
  await expect(debSteps).toContainText(`echo '${deb.sha256}  ${deb.name}' | sha256sum -c -`);
  // The token in its own variable of the env file, off the agent's command line.
  await expect(debSteps).toContainText(`VFIO_FLEET_TOKEN=${token}`);
  await expect(debSteps).toContainText(`VFIO_FLEET_AGENT_ARGS="--label rack=r42"`);
  const playbook = created.getByRole('figure', { name: /^Ansible playbook/ });
  await expect(playbook).toContainText(`checksum: "sha256:${deb.sha256}"`);
  await expect(playbook).toContainText(
    `VFIO_FLEET_TOKEN=${token}\\nVFIO_FLEET_AGENT_ARGS=\\"--label rack=r42\\"`,
  );
  for (const label of ['Copy script', 'Copy .deb steps', 'Copy playbook']) {
    await expect(created.getByRole('button', { name: label })).toBeVisible();
  }
  await expect(created).not.toContainText('has not been packaged');
  await shot('admin-install-commands');

  // What the script command fetches is served on the same port as the UI, made for this server.
  const installSh = await request.get(`${fleet.url}/install.sh`);
  expect(installSh.status()).toBe(200);
  const text = await installSh.text();
  expect(text).toContain(`SERVER="${fleet.url}"`);
  expect(text).not.toMatch(/__VFIO_FLEET_[A-Z_]+__/);
  const download = await request.get(`${fleet.url}/downloads/${deb.name}`);
  expect(download.status()).toBe(200);
  expect(download.headers()['x-checksum-sha256']).toBe(deb.sha256);
});

test('the hosts list and a host page show the agent version of each host', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  await signIn('viewer', '/hosts');
  const panel = page.getByRole('region', { name: 'Agent versions' });
  await expect(panel).toContainText(`This server ships agent ${CURRENT}.`);
  await expect(panel).toContainText('No host runs an outdated agent.');
  const versions = panel.getByRole('table', { name: 'Agent versions in the fleet' });
  const currentRow = versions.getByRole('row').filter({ hasText: CURRENT });
  await expect(currentRow).toHaveCount(1);
  // Every fleet host runs it (and so may hosts other journeys enrolled).
  const hostsCell = currentRow.getByRole('cell').nth(1);
  await expect
    .poll(async () => Number(await hostsCell.textContent()))
    .toBeGreaterThanOrEqual(fleet.hosts.length);

  const table = page.getByRole('table', { name: 'Hosts', exact: true });
  // The Agent column by its header, not its place: columns are added after it.
  const headers = (await table.getByRole('columnheader').allTextContents()).map((h) => h.trim());
  const agentColumn = headers.indexOf('Agent');
  expect(agentColumn).toBeGreaterThan(0);
  for (const host of fleet.hosts) {
    const row = table.getByRole('row').filter({
      has: page.getByRole('link', { name: host.hostname, exact: true }),
    });
    await expect(row.getByRole('cell').nth(agentColumn)).toHaveText(CURRENT);
  }
  await shot('hosts-agent-versions');

  const first = fleet.hosts[0];
  if (first === undefined) throw new Error('no hosts');
  await page.goto(`${fleet.url}/hosts/${first.hostId}`);
  await expect(page.locator('dt:text-is("Agent") + dd')).toHaveText(CURRENT);
});
