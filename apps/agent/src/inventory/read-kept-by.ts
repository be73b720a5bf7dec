/**
 * What re-creates each device's binding at boot (issue 17 part 7): a sysfs rebind, ours or by
 * hand, is gone at the next reboot unless one of these does it again. Read on every scan, so the
 * dashboard can say of each bound device who keeps it, or that nobody does:
 *
 * - the agent's persisted bindings (`<stateDir>/bindings.json`, re-applied by `run` at start),
 * - driverctl (`/etc/driverctl.d/pci-<addr>`, whose content is the driver name),
 * - `vfio-pci.ids=` / `vfio_pci.ids=` on the kernel command line,
 * - `options vfio-pci ids=` / `options vfio_pci ids=` in `/etc/modprobe.d/*.conf`.
 *
 * Every file is read through HostFs, so `--root` works on captures and fixtures. `status` reads
 * the same claims (rebind/ownership) to flag contradictions.
 */
import { type DeviceFacts, type KeptBy, kernelNameSchema } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';

export const DRIVERCTL_DIR = '/etc/driverctl.d';
export const MODPROBE_DIR = '/etc/modprobe.d';
/** vfio-pci registers its dynamic ids for its own driver name. */
const VFIO_PCI_DRIVER = 'vfio-pci';
/** A host with more modprobe.d files than this is not one we can describe: the rest are skipped. */
const MAX_MODPROBE_FILES = 256;

/** A persisted binding as far as boot claims need it (rebind/persist owns the file). */
export interface PersistedClaim {
  address: string;
  vendorId: string;
  deviceId: string;
  driver: string;
}

type DeviceIds = Pick<
  DeviceFacts,
  'address' | 'vendorId' | 'deviceId' | 'subsystemVendorId' | 'subsystemDeviceId'
>;

/** One `vfio-pci.ids` entry: vendor:device[:subvendor[:subdevice]] (absent fields match any). */
interface IdMatch {
  source: string;
  keeper: 'vfio-pci.ids' | 'modprobe.d';
  fields: Array<string | null>;
}

/** The host's boot-time binding mechanisms, read once per scan. */
export interface BootClaims {
  driverctl: Map<string, { driver: string; source: string }>;
  ids: IdMatch[];
}

export async function readBootClaims(
  fs: HostFs,
  cmdlineVfioPciIds: readonly string[],
): Promise<BootClaims> {
  return {
    driverctl: await readDriverctl(fs),
    ids: [
      ...cmdlineVfioPciIds.flatMap((text) => parseIds(text, '/proc/cmdline', 'vfio-pci.ids')),
      ...(await readModprobeIds(fs)),
    ],
  };
}

/**
 * Every claim on one device. A persisted record whose vendor:device differs from the card in the
 * slot now is no claim: the agent will not re-bind a swapped card (`status` reports it).
 */
export function claimsOf(
  device: DeviceIds,
  boot: BootClaims,
  persisted: readonly PersistedClaim[],
): KeptBy[] {
  const claims: KeptBy[] = [];
  const record = persisted.find((b) => b.address === device.address);
  if (
    record !== undefined &&
    record.vendorId === device.vendorId &&
    record.deviceId === device.deviceId
  ) {
    claims.push({ keeper: 'vfio-fleet', driver: record.driver, source: 'bindings.json' });
  }
  const fromDriverctl = boot.driverctl.get(device.address);
  if (fromDriverctl !== undefined) claims.push({ keeper: 'driverctl', ...fromDriverctl });
  for (const id of boot.ids) {
    if (matchesId(device, id.fields)) {
      claims.push({ keeper: id.keeper, driver: VFIO_PCI_DRIVER, source: id.source });
    }
  }
  return claims;
}

/** driverctl's overrides: one file per device, `pci-<addr>`, holding the driver name. */
async function readDriverctl(fs: HostFs): Promise<BootClaims['driverctl']> {
  const result: BootClaims['driverctl'] = new Map();
  for (const name of await fs.listDir(DRIVERCTL_DIR)) {
    const match = /^pci-([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$/.exec(name);
    if (match === null) continue;
    const source = `${DRIVERCTL_DIR}/${name}`;
    const driver = kernelNameSchema.safeParse(await fs.readAttr(source));
    const address = match[1];
    if (!driver.success || address === undefined) continue;
    result.set(address, { driver: driver.data, source });
  }
  return result;
}

/** `options vfio-pci ids=10de:2204,10de:1aef` lines (either spelling of the module). */
async function readModprobeIds(fs: HostFs): Promise<IdMatch[]> {
  const result: IdMatch[] = [];
  const names = (await fs.listDir(MODPROBE_DIR)).filter((n) => n.endsWith('.conf')).sort();
  for (const name of names.slice(0, MAX_MODPROBE_FILES)) {
    const source = `${MODPROBE_DIR}/${name}`;
    const text = await fs.readText(source);
    if (text === null) continue;
    // modprobe.d joins lines ending in a backslash before parsing.
    for (const line of text.replace(/\\\n/g, ' ').split('\n')) {
      const words = line.replace(/#.*/, '').trim().split(/\s+/);
      if (words[0] !== 'options') continue;
      if (words[1] !== 'vfio-pci' && words[1] !== 'vfio_pci') continue;
      for (const word of words.slice(2)) {
        if (!word.startsWith('ids=')) continue;
        for (const id of word.slice(4).split(',')) {
          result.push(...parseIds(id, source, 'modprobe.d'));
        }
      }
    }
  }
  return result;
}

function parseIds(text: string, source: string, keeper: IdMatch['keeper']): IdMatch[] {
  const fields = text
    .trim()
    .toLowerCase()
    .split(':')
    .map((f) => (f === '' ? null : f));
  if (fields.length < 2) return [];
  return [{ source, keeper, fields }];
}

/** vfio-pci's id parser: missing or `ffffffff` fields match any (PCI_ANY_ID). */
function matchesId(device: DeviceIds, fields: ReadonlyArray<string | null>): boolean {
  const values = [
    device.vendorId,
    device.deviceId,
    device.subsystemVendorId,
    device.subsystemDeviceId,
  ];
  return values.every((value, i) => {
    const want = fields[i];
    if (want === undefined || want === null || /^f{4,8}$/.test(want)) return true;
    return value !== null && Number.parseInt(want, 16) === Number.parseInt(value, 16);
  });
}
