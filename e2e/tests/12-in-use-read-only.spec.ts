// A device a VM holds, and a host whose agent may not rebind, as an operator meets them.
// The agent does not read holders from /proc yet (another part of issue 17), so the held device
// comes from a crafted snapshot: a real scan of the vfio-bound fixture with inUse/holder set on one
// function, sent by an agent speaking the protocol (src/hostile-agent.ts). The server assesses
// readiness itself, so `in use` below is core's verdict. The VM name is hostile markup, as a
// process command line on an agent's host may hold. Runs after 11: its hosts stay in the fleet.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type HostSnapshot, hostSnapshotSchema } from '@vfio-fleet/core';
import { buildHostTree, scenario } from '@vfio-fleet/host-fixtures';
import { signedIn } from '../src/api-client';
import { deviceCard, groupBox, rebindButtons } from '../src/host-page';
import { type HostileAgent, startHostileAgent } from '../src/hostile-agent';
import { expectInert } from '../src/inert';
import { scanJson } from '../src/processes';
import { expect, test } from '../src/test';

/** Group 21 of the vfio-bound fixture: two functions on vfio-pci; the first is held. */
const HELD = '0000:17:00.0';
const MATE = '0000:17:00.1';
const HELD_GROUP = 21;
/** Group 52: an i40e function ready for vfio, on the same host (rebinding is offered there). */
const READY_GROUP = 52;
const VM = 'vm-e2e<img src=x onerror=window.__xss=20>';
const COMMAND = 'qemu-system-x86_64 <svg onload=window.__xss=21>';

function withHostname(snapshot: HostSnapshot, hostname: string): HostSnapshot {
  return { ...snapshot, host: { ...snapshot.host, hostname } };
}

test('an in-use device shows its VM and locks its group; a read-only host offers no rebind', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  test.setTimeout(240_000);
  const dir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-e2e-in-use-'));
  const agents: HostileAgent[] = [];
  try {
    const admin = await signedIn(fleet.url, fleet.users.admin.username, fleet.users.admin.password);
    const { token } = await admin.tokens.create.mutate({
      label: 'e2e in-use and read-only',
      ttlHours: 1,
      maxUses: 2,
    });
    const root = path.join(dir, 'host');
    await buildHostTree(root, scenario('vfio-bound'));
    const scanned = hostSnapshotSchema.parse(scanJson(root, fleet.agentExtraArgs));
    const held = withHostname(scanned, 'e2e-in-use-host');
    held.devices = held.devices.map((d) =>
      d.address === HELD
        ? { ...d, inUse: true, holder: { pid: 4242, command: COMMAND, vm: VM } }
        : d,
    );
    agents.push(
      await startHostileAgent({
        url: fleet.url,
        token,
        hello: { hostname: 'e2e-in-use-host', kernelRelease: null, labels: {}, allowRebind: true },
        snapshot: held,
        onJob: () => [],
      }),
    );
    agents.push(
      await startHostileAgent({
        url: fleet.url,
        token,
        hello: {
          hostname: 'e2e-read-only-host',
          kernelRelease: null,
          labels: {},
          allowRebind: false,
        },
        snapshot: withHostname(scanned, 'e2e-read-only-host'),
        onJob: () => [],
      }),
    );
    const { items } = await admin.hosts.list.query({ search: 'e2e-', limit: 10 });
    const idOf = (hostname: string) => {
      const id = items.find((h) => h.hostname === hostname)?.id;
      if (id === undefined) throw new Error(`${hostname} is not listed`);
      return id;
    };
    const heldHost = idOf('e2e-in-use-host');
    const readOnlyHost = idOf('e2e-read-only-host');

    // The held device names its VM, pid and command; its group offers no restore, and says why.
    await signIn('operator', `/hosts/${heldHost}`);
    await expect(page.getByRole('heading', { name: 'e2e-in-use-host', level: 1 })).toBeVisible();
    const card = deviceCard(page, HELD);
    await expect(card).toContainText('in use');
    await expect(card).toContainText(`VM ${VM}`);
    await expect(card).toContainText('4242');
    await expect(card).toContainText(COMMAND);
    const group = groupBox(page, HELD_GROUP);
    await expect(group.getByRole('note')).toContainText(`${HELD} by VM ${VM}`);
    await expect(group.getByRole('note')).toContainText('No restore or rebind');
    // Only keeping it across reboots, which moves no device, is offered while it is held.
    await expect(rebindButtons(group)).toHaveText(['Keep across reboots']);
    await expect(deviceCard(page, MATE)).toContainText('blocked');
    // The same operator on the same host still gets a rebind where nothing is held.
    await expect(
      groupBox(page, READY_GROUP).getByRole('button', { name: 'Move group to vfio' }),
    ).toBeVisible();
    await expectInert(page);
    await shot('host-in-use');

    // "Which host holds VM X's devices": the devices search finds it by the VM's name.
    await page.goto(`${fleet.url}/devices?q=${encodeURIComponent('vm-e2e<img')}`);
    const devices = page.getByRole('table', { name: /^Devices, page 1/ });
    await expect(devices.getByRole('row')).toHaveCount(2);
    const row = devices.getByRole('row').nth(1);
    await expect(row.getByRole('link', { name: 'e2e-in-use-host' })).toBeVisible();
    await expect(row).toContainText(HELD);
    await expect(row).toContainText(`VM ${VM}`);
    await expectInert(page);

    // The read-only host says so, says how to allow rebinding, and offers no rebind anywhere.
    await page.goto(`${fleet.url}/hosts/${readOnlyHost}`);
    await expect(page.getByRole('heading', { name: 'e2e-read-only-host', level: 1 })).toBeVisible();
    const note = page.getByRole('note', { name: 'Read-only host' });
    await expect(note).toContainText('--allow-rebind');
    await expect(groupBox(page, READY_GROUP)).toBeVisible();
    await expect(rebindButtons(page)).toHaveCount(0);
    await shot('host-read-only');

    // The hosts list tells the two apart.
    await page.goto(`${fleet.url}/hosts`);
    const hostRow = (name: string) =>
      page.getByRole('row').filter({ has: page.getByRole('link', { name, exact: true }) });
    await expect(hostRow('e2e-read-only-host')).toContainText('read-only');
    await expect(hostRow('e2e-in-use-host')).not.toContainText('read-only');
  } finally {
    for (const agent of agents) agent.close();
    await rm(dir, { recursive: true, force: true });
  }
});
