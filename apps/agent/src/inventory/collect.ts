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
  type Problem,
  selectVfioDriver,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import type { Logger } from '../logger';
import { readCritical } from './read-critical';
import { readIdentity } from './read-identity';
import { readIommu } from './read-iommu';
import { readKernel } from './read-kernel';
import { type ModulesAliasFacts, readModulesAlias } from './read-modules-alias';
import { readPciDevices } from './read-pci-devices';
import { readPciIds } from './read-pci-ids';

export interface CollectOptions {
  /** pci.ids on the machine running the agent; by default the host's own is searched. */
  pciIdsPath?: string | null;
  logger?: Logger;
  /** Injected so tests and capture comparisons can pin it. */
  now?: () => Date;
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
  const pci = await readPciDevices(fs, pciIds.db);
  const critical = await readCritical(fs, {
    devices: pci.devices,
    cmdlineParams: kernel.cmdlineParams,
  });

  const devices: DeviceFacts[] = pci.devices.map((device) => {
    const vfio =
      device.modalias === null
        ? null
        : selectVfioDriver(modulesAlias.index, device.modalias, kernel.loadedDrivers);
    return { ...device, vfio, vfioDriver: vfio?.module ?? null };
  });

  const problems: Problem[] = [
    ...pci.problems,
    ...iommu.problems,
    ...modulesAlias.problems,
    ...pciIds.problems,
    ...critical.problems,
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

function modulesAliasSummary(facts: ModulesAliasFacts): HostFactsSnapshot['host']['modulesAlias'] {
  return {
    path: facts.path,
    pciAliases: facts.pciAliases,
    vfioAliases: facts.vfioAliases,
    malformedLines: facts.malformedLines,
  };
}
