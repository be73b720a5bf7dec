/**
 * The host driver each device had before it went to vfio, in `<stateDir>/host-drivers.json`, so a
 * restore can check the device is back on *that* driver, not merely off vfio (issue 17 part 5).
 * Written by every move to vfio (daemon jobs, the CLI's `bind`, reapplied persisted bindings all
 * run the executor). Keyed by address and vendor:device: a swapped card does not inherit it.
 *
 * A device with no record (on vfio since boot: vfio-pci.ids, driverctl, modprobe.d) expects what
 * the kernel's own `pci:` aliases pick for its modalias.
 */
import path from 'node:path';
import {
  comparePciAddresses,
  type HostDriverExpectation,
  type HostSnapshot,
  hostDriverFromAliases,
  isVfioDriverName,
  kernelNameSchema,
  pciAddressSchema,
} from '@vfio-fleet/core';
import { z } from 'zod';
import type { HostFs } from '../host-fs';
import { readLoadedDrivers } from '../inventory/read-kernel';
import { readModulesAlias } from '../inventory/read-modules-alias';
import type { DeviceBinding } from './job-store';
import { readOptional, writeFileAtomic } from './state-files';

export const HOST_DRIVERS_FILE = 'host-drivers.json';

const hex4 = z.string().regex(/^[0-9a-f]{4}$/);

const recordSchema = z.object({
  address: pciAddressSchema,
  vendorId: hex4,
  deviceId: hex4,
  driver: kernelNameSchema,
});
type HostDriverRecord = z.infer<typeof recordSchema>;

const fileSchema = z.object({ version: z.literal(1), devices: z.array(recordSchema).max(4096) });

function filePath(stateDir: string): string {
  return path.join(stateDir, HOST_DRIVERS_FILE);
}

/** The records; an unreadable or damaged file counts as none (the aliases then decide). */
export async function readHostDrivers(stateDir: string): Promise<HostDriverRecord[]> {
  const text = await readOptional(filePath(stateDir)).catch(() => null);
  if (text === null) return [];
  try {
    const parsed = fileSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data.devices : [];
  } catch {
    return [];
  }
}

/** Records the host driver of each device in `before` that was on one and is now on vfio. */
export async function recordHostDrivers(
  stateDir: string,
  snapshot: HostSnapshot,
  before: readonly DeviceBinding[],
): Promise<void> {
  const fresh: HostDriverRecord[] = [];
  for (const b of before) {
    if (b.driver === null || isVfioDriverName(b.driver)) continue;
    const device = snapshot.devices.find((d) => d.address === b.address);
    if (device === undefined) continue;
    const { vendorId, deviceId } = device;
    fresh.push({ address: b.address, vendorId, deviceId, driver: b.driver });
  }
  if (fresh.length === 0) return;
  const kept = (await readHostDrivers(stateDir)).filter(
    (r) => !fresh.some((f) => f.address === r.address),
  );
  const devices = [...kept, ...fresh].sort((a, b) => comparePciAddresses(a.address, b.address));
  await writeFileAtomic(
    filePath(stateDir),
    `${JSON.stringify({ version: 1, devices }, null, 2)}\n`,
  );
}

/**
 * What each device on vfio must end on when restored: its recorded driver when the record is for
 * the same card, else the aliases' pick (no modules.alias: no expectation, only "off vfio").
 */
export async function hostDriverExpectations(
  fs: HostFs,
  stateDir: string,
  snapshot: HostSnapshot,
): Promise<Map<string, HostDriverExpectation>> {
  const records = await readHostDrivers(stateDir);
  const aliases = await readModulesAlias(fs, snapshot.host.kernelRelease);
  const loaded = await readLoadedDrivers(fs);
  const blacklisted = await readBlacklist(fs);
  const result = new Map<string, HostDriverExpectation>();
  for (const d of snapshot.devices) {
    const onVfio = [d.driver, d.driverOverride].some((n) => n !== null && isVfioDriverName(n));
    if (!onVfio) continue;
    const record = records.find(
      (r) => r.address === d.address && r.vendorId === d.vendorId && r.deviceId === d.deviceId,
    );
    const picked =
      aliases.index === null || d.modalias === null
        ? null
        : hostDriverFromAliases(aliases.index, d.modalias, loaded, blacklisted);
    if (record === undefined) {
      if (picked !== null) result.set(d.address, picked);
      continue;
    }
    // Registered: nothing to load. Unloaded since: the module the aliases name for that driver,
    // else the driver's own name (most PCI drivers are named after their module).
    const registered = await fs.exists(`/sys/bus/pci/drivers/${record.driver}`);
    const module = registered
      ? null
      : picked?.driver === record.driver && picked.module !== null
        ? picked.module
        : record.driver.replaceAll('-', '_');
    result.set(d.address, { driver: record.driver, module });
  }
  return result;
}

/** Where kmod reads `blacklist` lines (modprobe.d(5)); later directories do not unlist a module. */
const MODPROBE_DIRS = [
  '/etc/modprobe.d',
  '/run/modprobe.d',
  '/lib/modprobe.d',
  '/usr/lib/modprobe.d',
];

/** Modules that kmod will not load by alias: an explicit modprobe by name would load them anyway. */
async function readBlacklist(fs: HostFs): Promise<Set<string>> {
  const result = new Set<string>();
  for (const dir of MODPROBE_DIRS) {
    for (const name of await fs.listDir(dir)) {
      if (!name.endsWith('.conf')) continue;
      const text = (await fs.readText(`${dir}/${name}`)) ?? '';
      for (const line of text.split('\n')) {
        const [keyword, module] = line.trim().split(/\s+/);
        if (keyword === 'blacklist' && module !== undefined) {
          result.add(module.replaceAll('-', '_'));
        }
      }
    }
  }
  return result;
}
