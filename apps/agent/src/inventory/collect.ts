/**
 * Reads a whole host into a HostSnapshot: every collector, then vfio driver selection per device,
 * schema validation, and core's readiness assessment. Stateless apart from the HostFs, so the
 * `run` daemon can call it on every rescan.
 */
import {
  assessSnapshot,
  type DeviceFacts,
  type HostFactsSnapshot,
  type HostSnapshot,
  hostFactsSnapshotSchema,
  INVENTORY_SCHEMA_VERSION,
  type IommuGroup,
  kernelNameSchema,
  type Problem,
  selectVfioDriver,
  wireDeviceFactsSchema,
} from '@vfio-fleet/core';
import type { z } from 'zod';
import type { HostFs } from '../host-fs';
import type { Logger } from '../logger';
import { readCritical } from './read-critical';
import { type HolderCache, readHolders } from './read-holders';
import { readIdentity } from './read-identity';
import { readIommu } from './read-iommu';
import { claimsOf, type PersistedClaim, readBootClaims } from './read-kept-by';
import { readKernel } from './read-kernel';
import { type ModulesAliasFacts, readModulesAlias } from './read-modules-alias';
import {
  type LockedAttrReader,
  PCI_DEVICES_DIR,
  type PciDeviceFacts,
  readPciDevices,
  type UnreadablePciDevice,
} from './read-pci-devices';
import { readPciIds } from './read-pci-ids';

export interface CollectOptions {
  /** pci.ids on the machine running the agent; by default the host's own is searched. */
  pciIdsPath?: string | null;
  logger?: Logger;
  /** Injected so tests and capture comparisons can pin it. */
  now?: () => Date;
  /** A daemon's memory of who holds its vfio devices, so a rescan need not walk /proc again. */
  holders?: HolderCache;
  /** How a held vfio device's lock-taking attributes are read; default in-process. */
  lockedRead?: LockedAttrReader;
  /** The agent's persisted bindings (`<stateDir>/bindings.json`), for each device's `keptBy`. */
  persisted?: readonly PersistedClaim[];
}

export async function collectHost(fs: HostFs, opts: CollectOptions = {}): Promise<HostSnapshot> {
  return assessSnapshot(await collectHostFacts(fs, opts));
}

/** The facts alone, before readiness: what a server would assess with its own core version. */
export async function collectHostFacts(
  fs: HostFs,
  opts: CollectOptions = {},
): Promise<HostFactsSnapshot> {
  const started = Date.now();
  const kernel = await readKernel(fs);
  const [identity, iommu, pciIds, modulesAlias] = await Promise.all([
    readIdentity(fs),
    readIommu(fs),
    readPciIds(fs, opts.pciIdsPath ?? null),
    readModulesAlias(fs, kernel.release),
  ]);
  const pci = await readPciDevices(fs, pciIds.db, opts.lockedRead);
  const holders = await readHolders(fs, pci.devices, opts.holders ?? null);
  const boot = await readBootClaims(fs, kernel.cmdline.vfioPciIds);
  const critical = await readCritical(fs, {
    devices: pci.devices,
    cmdlineParams: kernel.cmdlineParams,
  });

  const devices: DeviceFacts[] = [];
  const unreadable = [...pci.unreadable];
  for (const device of pci.devices) {
    const vfio =
      device.modalias === null
        ? null
        : selectVfioDriver(modulesAlias.index, device.modalias, kernel.loadedDrivers);
    const use = holders.uses.get(device.address);
    const facts: DeviceFacts = {
      ...device,
      inUse: use?.inUse ?? false,
      holder: use?.holder ?? null,
      keptBy: claimsOf(device, boot, opts.persisted ?? []),
      vfio,
      vfioDriver: vfio?.module ?? null,
    };
    // A function whose files are out of any real bound (a driver link with blanks, a 10 KB
    // modalias) is unreadable too: one such device must not fail the whole scan, nor be dropped.
    const checked = wireDeviceFactsSchema.safeParse(facts);
    if (checked.success) devices.push(facts);
    else unreadable.push(unreadableOf(device, checked.error));
  }

  const problems: Problem[] = [
    ...pci.problems,
    ...unreadableProblems(unreadable, iommu.groups),
    ...iommu.problems,
    ...modulesAlias.problems,
    ...pciIds.problems,
    ...critical.problems,
    ...holders.problems,
  ];
  const facts = hostFactsSnapshotSchema.parse({
    schemaVersion: INVENTORY_SCHEMA_VERSION,
    collectedAt: (opts.now?.() ?? new Date()).toISOString(),
    host: {
      hostname: identity.hostname,
      machineId: identity.machineId,
      kernelRelease: kernel.release,
      cpuVendor: kernel.cpuVendor,
      virtualMachine: kernel.virtualMachine,
      cmdline: kernel.cmdline,
      iommu: {
        enabled: iommu.groups.length > 0,
        units: iommu.units,
        groupCount: iommu.groups.length,
        interruptRemapping: iommu.interruptRemapping,
      },
      vfio: { modulesLoaded: kernel.vfioModules, devNodes: kernel.vfioDevNodes },
      modulesAlias: modulesAliasSummary(modulesAlias),
      pciIdsPath: pciIds.path,
      critical: critical.critical,
    },
    devices,
    groups: iommu.groups,
    problems,
  });
  opts.logger?.debug(
    { root: fs.root, devices: devices.length, problems: problems.length, ms: Date.now() - started },
    'host collected',
  );
  return facts;
}

function unreadableOf(
  device: DeviceFacts | PciDeviceFacts,
  error: z.ZodError,
): UnreadablePciDevice {
  const issue = error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? 'facts' : issue.path.join('.');
  return {
    address: device.address,
    iommuGroup: device.iommuGroup,
    driver: kernelNameSchema.safeParse(device.driver).success ? device.driver : null,
    why: `${where}: ${issue?.message ?? 'invalid'}`,
  };
}

/**
 * One problem per unreadable function, carrying what could be read of it; its group comes from
 * the /sys/kernel/iommu_groups listing, which names it whatever its own files say.
 */
function unreadableProblems(
  unreadable: readonly UnreadablePciDevice[],
  groups: readonly IommuGroup[],
): Problem[] {
  const listed = new Map<string, number>();
  for (const group of groups) for (const address of group.devices) listed.set(address, group.id);
  return unreadable.map((u) => ({
    source: `${PCI_DEVICES_DIR}/${u.address}`,
    message: u.why,
    device: {
      address: u.address,
      iommuGroup: listed.get(u.address) ?? u.iommuGroup,
      driver: u.driver,
    },
  }));
}

function modulesAliasSummary(facts: ModulesAliasFacts): HostFactsSnapshot['host']['modulesAlias'] {
  return {
    path: facts.path,
    pciAliases: facts.pciAliases,
    vfioAliases: facts.vfioAliases,
    malformedLines: facts.malformedLines,
  };
}
