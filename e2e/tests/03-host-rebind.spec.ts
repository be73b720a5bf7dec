// An operator opens the mlx5-vf host, finds its IOMMU groups drawn with their devices, moves the
// ConnectX-6 Dx VF's group to vfio through the confirmation (plan, blast radius, acknowledgement),
// watches the job succeed on the live job page, sees the VF on mlx5_vfio_pci, and restores it.
import { MLX5_VF } from '../src/fleet-info';
import {
  bootFateOf,
  deviceCard,
  driverOf,
  groupBox,
  jobState,
  rebindButtons,
} from '../src/host-page';
import { expect, type Page, test } from '../src/test';

/** Opens the confirmation for `button` in the VF's group, checks what it shows, queues it. */
async function confirmRebind(
  page: Page,
  options: {
    group: number;
    hostname: string;
    button: string;
    /** What the blast radius must name, and how many devices it says move. */
    moving?: { address: string; count: number };
    shot?: () => Promise<void>;
  },
): Promise<void> {
  const moving = options.moving ?? { address: MLX5_VF, count: 1 };
  await groupBox(page, options.group).getByRole('button', { name: options.button }).click();
  const dialog = page.getByRole('dialog', {
    name: `Rebind IOMMU group ${options.group} on ${options.hostname}`,
  });
  await expect(dialog).toBeVisible();
  // The plan: ordered sysfs steps, and the blast radius naming the VF (alone in its group).
  const steps = dialog.getByRole('table', { name: 'Steps' });
  await expect(steps).toBeVisible();
  await expect(steps.getByRole('row')).not.toHaveCount(1);
  await expect(steps).toContainText('driver_override');
  const blast = dialog.getByRole('table', { name: 'Blast radius' });
  await expect(blast).toContainText(moving.address);
  const heading = new RegExp(`Blast radius: ${moving.count} devices? move`);
  await expect(dialog.getByRole('heading', { name: heading })).toBeVisible();
  // Nothing is queued before the explicit acknowledgement.
  const queue = dialog.getByRole('button', { name: 'Queue rebind' });
  await expect(queue).toBeDisabled();
  await dialog.getByRole('checkbox', { name: /I understand/ }).check();
  await expect(queue).toBeEnabled();
  if (options.shot !== undefined) await options.shot();
  await queue.click();
}

/** On the job page the rebind opened: the state reaches `succeeded` while the page stays open. */
async function jobSucceeds(page: Page): Promise<void> {
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
  // The live view updates itself: no reload anywhere in this test.
  await expect(jobState(page)).toHaveText('succeeded', { timeout: 120_000 });
  await expect(page.getByRole('table', { name: 'Step log' })).toContainText('driver_override');
}

test('an operator rebinds the Mellanox VF to mlx5_vfio_pci and restores it', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  const host = fleet.hosts.find((h) => h.scenario === 'mlx5-vf');
  if (host === undefined) throw new Error('no mlx5-vf host in the fleet');
  const vf = host.devices.find((d) => d.address === MLX5_VF);
  if (vf === undefined || vf.iommuGroup === null) throw new Error(`no VF ${MLX5_VF} in a group`);
  expect(vf).toMatchObject({ driver: 'mlx5_core', vfioDriver: 'mlx5_vfio_pci', status: 'ready' });

  await signIn('operator', `/hosts/${host.hostId}`);
  await expect(page.getByRole('heading', { name: host.hostname, level: 1 })).toBeVisible();
  // Every IOMMU group of the fixture, drawn as a box holding exactly its devices.
  const groups = new Map<number | null, string[]>();
  for (const d of host.devices)
    groups.set(d.iommuGroup, [...(groups.get(d.iommuGroup) ?? []), d.address]);
  for (const [group, addresses] of groups) {
    const box = groupBox(page, group);
    await expect(box).toBeVisible();
    for (const address of addresses) {
      await expect(box.getByRole('listitem', { name: address, exact: true })).toBeVisible();
    }
  }
  await expect(driverOf(page, MLX5_VF)).toHaveText('mlx5_core');
  await expect(deviceCard(page, MLX5_VF)).toContainText('mlx5_vfio_pci');
  await shot('host');

  await confirmRebind(page, {
    group: vf.iommuGroup,
    hostname: host.hostname,
    button: 'Move group to vfio',
    shot: () => shot('rebind-confirmation', { fullPage: false }),
  });
  await jobSucceeds(page);
  const drivers = page.getByRole('table', { name: 'Drivers before and after' });
  await expect(drivers.getByRole('row').filter({ hasText: MLX5_VF })).toContainText(
    /mlx5_core\s*mlx5_vfio_pci/,
  );
  await shot('job');

  // The host page follows the agent's rescan on its own.
  await page.goto(`${fleet.url}/hosts/${host.hostId}`);
  await expect(driverOf(page, MLX5_VF)).toHaveText('mlx5_vfio_pci', { timeout: 60_000 });
  await shot('host-vf-on-vfio');

  await confirmRebind(page, {
    group: vf.iommuGroup,
    hostname: host.hostname,
    button: 'Restore host drivers',
  });
  await jobSucceeds(page);
  await page.goto(`${fleet.url}/hosts/${host.hostId}`);
  await expect(driverOf(page, MLX5_VF)).toHaveText('mlx5_core', { timeout: 60_000 });
});

// The demo's complaint: "Restore host drivers" left the GPU on no driver and called it a success.
// A restore now ends each device on the driver it had before it went to vfio, or fails. On the way
// the operator sees the binding would be lost at reboot, keeps it, and the restore forgets it.
test('a GPU and its audio function go to vfio and come back, each on the driver it had', async ({
  page,
  fleet,
  signIn,
}) => {
  const GPU = '0000:31:00.0';
  const AUDIO = '0000:31:00.1';
  const host = fleet.hosts.find((h) => h.scenario === 'dual-gpu');
  if (host === undefined) throw new Error('no dual-gpu host in the fleet');
  const gpu = host.devices.find((d) => d.address === GPU);
  if (gpu === undefined || gpu.iommuGroup === null) throw new Error(`no GPU ${GPU} in a group`);
  expect(gpu.driver).toBe('nvidia');

  await signIn('operator', `/hosts/${host.hostId}`);
  await expect(driverOf(page, GPU)).toHaveText('nvidia');
  await expect(driverOf(page, AUDIO)).toHaveText('snd_hda_intel');
  await confirmRebind(page, {
    group: gpu.iommuGroup,
    hostname: host.hostname,
    button: 'Move group to vfio',
    moving: { address: GPU, count: 2 },
  });
  await jobSucceeds(page);
  await expect(page.getByRole('term').filter({ hasText: 'Across reboots' })).toBeVisible();
  await expect(page.getByText('not kept', { exact: true })).toBeVisible();
  await page.goto(`${fleet.url}/hosts/${host.hostId}`);
  await expect(driverOf(page, GPU)).toHaveText('vfio-pci', { timeout: 60_000 });
  // Nothing binds it again at boot, and the page says so; keeping it moves no device.
  await expect(bootFateOf(page, GPU)).toHaveText('nobody keeps it (lost at reboot)');
  await groupBox(page, gpu.iommuGroup).getByRole('button', { name: 'Keep across reboots' }).click();
  const dialog = page.getByRole('dialog', {
    name: `Rebind IOMMU group ${gpu.iommuGroup} on ${host.hostname}`,
  });
  await expect(dialog).toContainText('The group is already on vfio: no device moves.');
  await expect(dialog.getByRole('table', { name: 'Steps' })).toHaveCount(0);
  await expect(dialog.getByRole('checkbox', { name: /Keep across reboots/ })).toBeChecked();
  const keep = dialog.getByRole('button', { name: 'Keep across reboots' });
  await expect(keep).toBeDisabled();
  await dialog.getByRole('checkbox', { name: /I understand/ }).check();
  await keep.click();
  await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
  await expect(jobState(page)).toHaveText('succeeded', { timeout: 120_000 });
  await expect(
    page.getByText(`Kept across reboots by vfio-fleet: ${GPU} (vfio-pci), ${AUDIO} (vfio-pci).`),
  ).toBeVisible();
  await page.goto(`${fleet.url}/hosts/${host.hostId}`);
  await expect(bootFateOf(page, GPU)).toHaveText('kept by vfio-fleet', { timeout: 60_000 });
  await expect(bootFateOf(page, AUDIO)).toHaveText('kept by vfio-fleet');
  await expect(rebindButtons(groupBox(page, gpu.iommuGroup))).toHaveText(['Restore host drivers']);

  await confirmRebind(page, {
    group: gpu.iommuGroup,
    hostname: host.hostname,
    button: 'Restore host drivers',
    moving: { address: GPU, count: 2 },
  });
  await jobSucceeds(page);
  // The job ends with each device on its own driver (it verifies exactly that, not "off vfio").
  const drivers = page.getByRole('table', { name: 'Drivers before and after' });
  await expect(drivers.getByRole('row').filter({ hasText: GPU })).toContainText(
    /vfio-pci\s*nvidia/,
  );
  await expect(drivers.getByRole('row').filter({ hasText: AUDIO })).toContainText(
    /vfio-pci\s*snd_hda_intel/,
  );
  // A restore forgets the record, so the next boot leaves the GPU to its host driver.
  await expect(
    page.getByText(`No longer kept on vfio at boot: ${GPU} (vfio-pci), ${AUDIO} (vfio-pci).`),
  ).toBeVisible();
  await page.goto(`${fleet.url}/hosts/${host.hostId}`);
  await expect(driverOf(page, GPU)).toHaveText('nvidia', { timeout: 60_000 });
  await expect(driverOf(page, AUDIO)).toHaveText('snd_hda_intel');
  await expect(bootFateOf(page, GPU)).toHaveCount(0);
});
