/**
 * modprobe in the kernel model: modules.alias says which modules exist and which PCI ids they
 * claim; loading one loads its dependencies first, registers its PCI driver and lets it probe
 * every unbound device it matches (driver_attach), as insmod of a PCI driver module does.
 */
import { KernelIoError } from '@vfio-fleet/core';
import { writeModule, writePciDriver } from './build-tree';
import type { DriverCore } from './kernel-model-driver-core';
import { type Held, STRERROR } from './kernel-model-kernel';
import type { ModelState } from './kernel-model-tree';

/** The vfio family: no `pci:` aliases (vfio_pci's are override-only), yet modprobe knows them. */
const VFIO_FAMILY = new Set(['vfio', 'vfio_pci', 'vfio_pci_core', 'vfio_iommu_type1', 'irqbypass']);

export const MODULE_NAME = /^[A-Za-z0-9_-]{1,55}$/;

/** The PCI driver name a module registers: KBUILD_MODNAME except where the source names it. */
function pciDriverName(module: string): string {
  if (module === 'vfio_pci') return 'vfio-pci';
  if (module === 'pci_stub') return 'pci-stub';
  return module;
}

/** What modprobe loads first (modules.dep and vfio's softdep on its IOMMU backend). */
function dependencies(module: string): string[] {
  if (module === 'vfio') return ['vfio_iommu_type1'];
  if (module === 'vfio_pci_core') return ['vfio', 'irqbypass'];
  if (module === 'vfio_pci') return ['vfio_pci_core'];
  // mlx5_vfio_pci links against mlx5_core for the device's migration commands.
  if (module === 'mlx5_vfio_pci') return ['vfio_pci_core', 'mlx5_core'];
  if (module.endsWith('_vfio_pci')) return ['vfio_pci_core'];
  return [];
}

export async function loadModule(
  core: DriverCore,
  held: Held,
  state: ModelState,
  module: string,
  asGiven: string,
  target: string,
): Promise<void> {
  const { tree } = core;
  if (await tree.exists(`sys/module/${module}`)) return;
  const aliases = await moduleAliases(core, module);
  if (aliases === null) {
    throw new KernelIoError(
      'ENOENT',
      target,
      `modprobe: FATAL: Module ${asGiven} not found in directory /lib/modules/${await tree.release()}`,
    );
  }
  for (const dep of dependencies(module)) {
    await loadModule(core, held, state, dep, dep, target);
  }
  const fault = core
    .faults()
    .find((f) => f.kind === 'modprobe-fails' && f.module.replaceAll('-', '_') === module);
  if (fault?.kind === 'modprobe-fails') {
    const errno = fault.errno ?? 'EIO';
    throw new KernelIoError(
      errno,
      target,
      `modprobe: ERROR: could not insert '${module}': ${STRERROR[errno]}`,
    );
  }
  const registers =
    module === 'vfio_pci' || module === 'pci_stub' || aliases > 0 ? [pciDriverName(module)] : [];
  for (const driver of registers) {
    await writePciDriver(tree.out, driver, module, []);
    state.driverOrder = [...state.driverOrder.filter((d) => d !== driver), driver];
  }
  await writeModule(tree.out, module, registers);
  // The container device comes with vfio itself (CONFIG_VFIO_CONTAINER).
  if (module === 'vfio') await tree.out.file('dev/vfio/vfio', '');
  if ((await tree.text('sys/bus/pci/drivers_autoprobe'))?.trim() === '0') return;
  // driver_attach: the new driver probes every unbound device it matches.
  for (const driver of registers) {
    for (const address of await tree.addresses()) {
      await core.waitForProbe(held, address);
      const device = await tree.device(address);
      if (device === null || device.driver !== null) continue;
      if (await core.matches(device, driver)) await core.probe(held, state, device, driver);
    }
  }
}

/**
 * How many PCI aliases (`pci:` or `vfio_pci:`) the module has in modules.alias; null when modprobe
 * would not find it (neither in the file nor of the vfio family / pci_stub).
 */
async function moduleAliases(core: DriverCore, module: string): Promise<number | null> {
  const text = await core.tree.modulesAlias();
  const entries = await core.aliasEntries();
  const pci = entries.filter((e) => e.module === module).length;
  if (pci > 0) return pci;
  if (VFIO_FAMILY.has(module) || module === 'pci_stub') return 0;
  // Modules with only other buses' aliases (usb:, acpi*:, platform:) still load.
  for (const line of text.split('\n')) {
    const name = line.trim().split(/\s+/)[2];
    if (line.startsWith('alias ') && name?.replaceAll('-', '_') === module) return 0;
  }
  return null;
}
