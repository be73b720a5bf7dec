// A blocked device on the critical-nvme-nic host: its reason is on the host page, and there is no
// control that could queue a rebind of its group.
import { deviceCard, groupBox } from '../src/host-page';
import { expect, test } from '../src/test';

test('a blocked device shows its reason and offers no way to queue it', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  const host = fleet.hosts.find((h) => h.scenario === 'critical-nvme-nic');
  if (host === undefined) throw new Error('no critical-nvme-nic host in the fleet');
  // The root disk's NVMe controller: blocked as host-critical (from the agent's own scan).
  const blocked = host.devices.find(
    (d) => d.status === 'blocked' && d.reasons.some((r) => r.code === 'host-critical'),
  );
  if (blocked === undefined) throw new Error('no host-critical device on critical-nvme-nic');

  await signIn('operator', `/hosts/${host.hostId}`);
  await expect(page.getByRole('heading', { name: host.hostname, level: 1 })).toBeVisible();
  const card = deviceCard(page, blocked.address);
  await expect(card).toContainText('blocked');
  const reasons = card.getByRole('list', { name: `Reasons for ${blocked.address}` });
  for (const reason of blocked.reasons) {
    await expect(reasons).toContainText(reason.code);
    await expect(reasons).toContainText(reason.message);
  }
  // Its group has no rebind control, and neither has any group whose endpoints are all blocked.
  const group = groupBox(page, blocked.iommuGroup);
  await expect(group.getByRole('button')).toHaveCount(0);
  const byGroup = new Map<number | null, typeof host.devices>();
  for (const d of host.devices)
    byGroup.set(d.iommuGroup, [...(byGroup.get(d.iommuGroup) ?? []), d]);
  for (const [number, devices] of byGroup) {
    if (devices.every((d) => d.status === 'blocked')) {
      await expect(groupBox(page, number).getByRole('button', { name: /vfio/i })).toHaveCount(0);
    }
  }
  await shot('host-blocked');
});
