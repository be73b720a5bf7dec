/**
 * Who keeps each vfio binding in place across a reboot. A sysfs rebind (ours or by hand) is gone
 * at the next boot unless something re-creates it, and hosts often carry several such mechanisms
 * at once, set up by different people over the years. `status` lists them per device and flags
 * the contradictions that bite at the next reboot:
 *
 * - our persisted state (`<stateDir>/bindings.json`, re-applied by `vfio-fleet-agent run`),
 * - driverctl (`/etc/driverctl.d/pci-<addr>`, whose content is the driver name),
 * - `vfio-pci.ids=` / `vfio_pci.ids=` on the kernel command line,
 * - `options vfio-pci ids=` / `options vfio_pci ids=` in `/etc/modprobe.d/*.conf`.
 *
 * Every file is read through HostFs, so `--root` works on captures and fixtures.
 */
import { type Device, type HostSnapshot, isVfioDriverName } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';
import type { PersistedBinding } from './persist';

export const DRIVERCTL_DIR = '/etc/driverctl.d';
export const MODPROBE_DIR = '/etc/modprobe.d';

export type Mechanism = 'persisted' | 'driverctl' | 'cmdline' | 'modprobe.d';

export interface OwnershipClaim {
  mechanism: Mechanism;
  /** The driver this mechanism binds the device to. */
  driver: string;
  /** Where it comes from: a file, or `/proc/cmdline`. */
  source: string;
}

export type OwnershipProblemCode =
  | 'mechanisms-disagree'
  | 'not-in-effect'
  | 'not-persisted'
  | 'persisted-device-changed'
  | 'persisted-device-absent';

export interface OwnershipProblem {
  code: OwnershipProblemCode;
  address: string;
  message: string;
}

export interface DeviceOwnership {
  address: string;
  vendorId: string;
  deviceId: string;
  driver: string | null;
  driverOverride: string | null;
  claims: OwnershipClaim[];
}

export interface OwnershipReport {
  devices: DeviceOwnership[];
  problems: OwnershipProblem[];
}

/** One `vfio-pci.ids` entry: vendor:device[:subvendor[:subdevice]] (absent fields match any). */
interface IdMatch {
  text: string;
  source: string;
  mechanism: 'cmdline' | 'modprobe.d';
  fields: Array<string | null>;
}

/** vfio-pci registers its dynamic ids for its own driver name. */
const VFIO_PCI_DRIVER = 'vfio-pci';

export async function analyzeOwnership(
  fs: HostFs,
  snapshot: HostSnapshot,
  persisted: readonly PersistedBinding[],
): Promise<OwnershipReport> {
  const driverctl = await readDriverctl(fs);
  const ids: IdMatch[] = [
    ...snapshot.host.cmdline.vfioPciIds.flatMap((text) =>
      parseIds(text, '/proc/cmdline', 'cmdline'),
    ),
    ...(await readModprobeIds(fs)),
  ];
  const problems: OwnershipProblem[] = [];
  const devices: DeviceOwnership[] = [];

  for (const device of snapshot.devices) {
    const claims: OwnershipClaim[] = [];
    const record = persisted.find((b) => b.address === device.address);
    if (record !== undefined) {
      if (record.vendorId !== device.vendorId || record.deviceId !== device.deviceId) {
        problems.push({
          code: 'persisted-device-changed',
          address: device.address,
          message: `${device.address} is persisted as ${record.vendorId}:${record.deviceId} but holds ${device.vendorId}:${device.deviceId} now: the agent will not re-bind it`,
        });
      } else {
        claims.push({ mechanism: 'persisted', driver: record.driver, source: 'bindings.json' });
      }
    }
    const fromDriverctl = driverctl.get(device.address);
    if (fromDriverctl !== undefined) claims.push({ mechanism: 'driverctl', ...fromDriverctl });
    for (const id of ids) {
      if (matchesId(device, id.fields)) {
        claims.push({ mechanism: id.mechanism, driver: VFIO_PCI_DRIVER, source: id.source });
      }
    }

    const onVfio = device.driver !== null && isVfioDriverName(device.driver);
    const vfioOverride = device.driverOverride !== null && isVfioDriverName(device.driverOverride);
    const vfioClaim = claims.some((c) => isVfioDriverName(c.driver));
    if (!onVfio && !vfioOverride && !vfioClaim) continue;

    devices.push({
      address: device.address,
      vendorId: device.vendorId,
      deviceId: device.deviceId,
      driver: device.driver,
      driverOverride: device.driverOverride,
      claims,
    });
    problems.push(...problemsOf(device, claims, onVfio));
  }

  for (const record of persisted) {
    if (!snapshot.devices.some((d) => d.address === record.address)) {
      problems.push({
        code: 'persisted-device-absent',
        address: record.address,
        message: `${record.address} is persisted (to ${record.driver}) but not on this host`,
      });
    }
  }
  return { devices, problems };
}

function problemsOf(
  device: Device,
  claims: readonly OwnershipClaim[],
  onVfio: boolean,
): OwnershipProblem[] {
  const problems: OwnershipProblem[] = [];
  const address = device.address;
  const drivers = [...new Set(claims.map((c) => c.driver))];
  if (drivers.length > 1) {
    const who = claims.map((c) => `${label(c)} → ${c.driver}`).join(', ');
    problems.push({
      code: 'mechanisms-disagree',
      address,
      message: `${address}: mechanisms disagree (${who}); which wins at boot depends on load order`,
    });
  }
  for (const claim of claims) {
    if (claim.driver === device.driver) continue;
    problems.push({
      code: 'not-in-effect',
      address,
      message: `${address}: ${label(claim)} binds it to ${claim.driver}, but it is on ${device.driver ?? 'no driver'}`,
    });
  }
  if (onVfio && claims.length === 0) {
    problems.push({
      code: 'not-persisted',
      address,
      message: `${address} is on ${device.driver ?? ''} but nothing persists it: it returns to its host driver at the next reboot (bind --persist, or driverctl)`,
    });
  }
  return problems;
}

function label(claim: OwnershipClaim): string {
  switch (claim.mechanism) {
    case 'persisted':
      return 'persisted binding';
    case 'driverctl':
      return `driverctl (${claim.source})`;
    case 'cmdline':
      return 'vfio-pci.ids on the kernel command line';
    case 'modprobe.d':
      return `vfio-pci ids in ${claim.source}`;
  }
}

/** driverctl's overrides: one file per device, `pci-<addr>`, holding the driver name. */
async function readDriverctl(fs: HostFs): Promise<Map<string, { driver: string; source: string }>> {
  const result = new Map<string, { driver: string; source: string }>();
  for (const name of await fs.listDir(DRIVERCTL_DIR)) {
    const match = /^pci-([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])$/.exec(name);
    if (match === null) continue;
    const source = `${DRIVERCTL_DIR}/${name}`;
    const driver = await fs.readAttr(source);
    const address = match[1];
    if (driver === null || driver === '' || address === undefined) continue;
    result.set(address, { driver, source });
  }
  return result;
}

/** `options vfio-pci ids=10de:2204,10de:1aef` lines (either spelling of the module). */
async function readModprobeIds(fs: HostFs): Promise<IdMatch[]> {
  const result: IdMatch[] = [];
  for (const name of await fs.listDir(MODPROBE_DIR)) {
    if (!name.endsWith('.conf')) continue;
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

function parseIds(text: string, source: string, mechanism: IdMatch['mechanism']): IdMatch[] {
  const fields = text
    .trim()
    .toLowerCase()
    .split(':')
    .map((f) => (f === '' ? null : f));
  if (fields.length < 2) return [];
  return [{ text, source, mechanism, fields }];
}

/** vfio-pci's id parser: missing or `ffffffff` fields match any (PCI_ANY_ID). */
function matchesId(device: Device, fields: ReadonlyArray<string | null>): boolean {
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
