/**
 * The human form of a HostSnapshot: devices grouped by IOMMU group (the unit vfio passes through),
 * then a host summary that says why devices can or cannot be passed through.
 */
import {
  bootFate,
  type Device,
  describeHolder,
  type HostSnapshot,
  type ReadinessStatus,
  unreadableByGroup,
} from '@vfio-fleet/core';
import type { Style } from './style';
import { type Cell, columnWidths, formatRow, formatTable } from './table';

const HEADER = ['ADDRESS', 'ID', 'NAME', 'DRIVER', 'VFIO DRIVER', 'STATUS', 'REASON'] as const;

export function renderScanReport(snapshot: HostSnapshot, style: Style): string {
  const byAddress = new Map(snapshot.devices.map((device) => [device.address, device]));
  const unreadable = unreadableByGroup(snapshot);
  const sections: Array<{ title: string; devices: Device[]; unreadable?: number }> =
    snapshot.groups.map((group) => ({
      title: `IOMMU group ${group.id}`,
      devices: group.devices.flatMap((address) => byAddress.get(address) ?? []),
      unreadable: unreadable.get(group.id)?.length,
    }));
  const grouped = new Set(snapshot.groups.flatMap((group) => group.devices));
  const ungrouped = snapshot.devices.filter((device) => !grouped.has(device.address));
  if (ungrouped.length > 0) sections.push({ title: 'no IOMMU group', devices: ungrouped });

  const rows = sections.map((section) => section.devices.map((device) => deviceRow(device, style)));
  const widths = columnWidths([[...HEADER], ...rows.flat()]);
  const lines: string[] = [formatRow(HEADER.map(style.bold), widths, '  ')];
  sections.forEach((section, i) => {
    const count = section.devices.length === 1 ? '1 device' : `${section.devices.length} devices`;
    const more = section.unreadable === undefined ? '' : `, ${section.unreadable} unreadable`;
    lines.push(style.bold(`${section.title} (${count}${more})`));
    for (const row of rows[i] ?? []) lines.push(formatRow(row, widths, '  '));
  });
  if (snapshot.devices.length === 0) lines.push('  (no PCI devices found)');
  lines.push('', ...renderHostSummary(snapshot, style));
  return `${lines.join('\n')}\n`;
}

function deviceRow(device: Device, style: Style): Cell[] {
  const firstReason = device.readiness.reasons[0];
  return [
    device.address,
    `${device.vendorId}:${device.deviceId}`,
    device.names.device ?? device.names.className,
    device.driver ?? '-',
    // A bridge is never handed to a VM; a vfio driver in its row would only suggest it could be.
    device.kind === 'bridge' ? '-' : (device.vfioDriver ?? '-'),
    { text: device.readiness.status, paint: statusPaint(device.readiness.status, style) },
    firstReason?.message ?? '',
  ];
}

function statusPaint(status: ReadinessStatus, style: Style): (text: string) => string {
  if (status === 'blocked') return style.red;
  if (status === 'ready') return style.green;
  return style.yellow;
}

function renderHostSummary(snapshot: HostSnapshot, style: Style): string[] {
  const { host } = snapshot;
  const count = (status: ReadinessStatus) =>
    snapshot.devices.filter((device) => device.readiness.status === status).length;
  const flags = host.cmdline;
  const setFlags = [
    flags.intelIommu === null ? null : `intel_iommu=${flags.intelIommu}`,
    flags.amdIommu === null ? null : `amd_iommu=${flags.amdIommu}`,
    flags.iommu === null ? null : `iommu=${flags.iommu}`,
    flags.iommuPassthrough === null ? null : `iommu.passthrough=${flags.iommuPassthrough}`,
    flags.pcieAcsOverride === null ? null : `pcie_acs_override=${flags.pcieAcsOverride}`,
    flags.vfioPciIds.length === 0 ? null : `vfio-pci.ids=${flags.vfioPciIds.join(',')}`,
  ].filter((flag) => flag !== null);
  const units = host.iommu.units.length === 0 ? 'no units' : host.iommu.units.join(', ');
  const alias = host.modulesAlias;

  const rows: Cell[][] = [
    ['Host', `${host.hostname}${host.machineId === null ? '' : ` (${host.machineId})`}`],
    ['Kernel', host.kernelRelease ?? 'unknown'],
    ['CPU', `${host.cpuVendor}${host.virtualMachine ? ' (virtual machine)' : ''}`],
    [
      'IOMMU',
      host.iommu.enabled
        ? `on: ${host.iommu.groupCount} groups, ${units}`
        : { text: `off: no IOMMU groups, ${units}`, paint: style.red },
    ],
    ['Interrupt remapping', host.iommu.interruptRemapping],
    ['IOMMU cmdline flags', setFlags.length === 0 ? 'none' : setFlags.join(' ')],
    [
      'vfio modules',
      host.vfio.modulesLoaded.length === 0 ? 'none loaded' : host.vfio.modulesLoaded.join(', '),
    ],
    ['/dev/vfio', host.vfio.devNodes.length === 0 ? 'absent' : host.vfio.devNodes.join(', ')],
    [
      'modules.alias',
      alias.path === null
        ? 'not found (vfio driver selection falls back to vfio_pci)'
        : `${alias.path}: ${alias.vfioAliases} vfio_pci aliases, ${alias.pciAliases} pci aliases`,
    ],
    ['pci.ids', host.pciIdsPath ?? 'not found (names from the built-in class table)'],
    [
      'Host-critical',
      host.critical.length === 0
        ? 'none found'
        : host.critical.map((c) => `${c.address} ${c.kind} (${c.detail})`).join('; '),
    ],
    [
      'Devices',
      `${snapshot.devices.length}: ${count('in-use')} in use by a VM or process, ${count('bound')} bound to vfio, ${count('ready')} ready, ${count('blocked')} blocked`,
    ],
  ];
  const held = heldByHolder(snapshot.devices);
  if (held !== null) rows.push(['In use', held]);
  const lost = snapshot.devices.filter((d) => bootFate(d).kind === 'lost').map((d) => d.address);
  if (lost.length > 0) {
    rows.push([
      'Lost at reboot',
      {
        text: `${lost.join(', ')}: on vfio, but nothing binds them again at boot (bind --persist, driverctl)`,
        paint: style.yellow,
      },
    ]);
  }
  const verdict = passthroughVerdict(snapshot);
  if (verdict !== null) {
    rows.push(['Passthrough', { text: verdict.summary, paint: style.yellow }]);
    if (verdict.remedy !== null) rows.push(['Remedy', verdict.remedy]);
  }

  const lines = [style.bold('Host'), ...formatTable(rows, '  ')];
  if (snapshot.problems.length > 0) {
    lines.push(style.bold(`Problems (${snapshot.problems.length})`));
    for (const problem of snapshot.problems) {
      const device = problem.device;
      lines.push(
        device === undefined
          ? `  - ${problem.message}`
          : `  - ${device.address} could not be read (${problem.message})${device.iommuGroup === null ? '' : `: IOMMU group ${device.iommuGroup} is blocked`}`,
      );
    }
  }
  return lines;
}

/** `VM "web-1" (pid 4242, "qemu-system-x86"): 0000:17:00.0, 0000:17:00.1; …`, or null if none. */
function heldByHolder(devices: readonly Device[]): string | null {
  const byHolder = new Map<string, string[]>();
  for (const device of devices) {
    if (!device.inUse) continue;
    const who = describeHolder(device.holder);
    byHolder.set(who, [...(byHolder.get(who) ?? []), device.address]);
  }
  if (byHolder.size === 0) return null;
  return [...byHolder].map(([who, addresses]) => `${who}: ${addresses.join(', ')}`).join('; ');
}

/**
 * When nothing can be passed through, say why once, from the error most devices share, and what
 * to do about it, instead of leaving the reader to infer it from a column of repeated reasons.
 */
function passthroughVerdict(
  snapshot: HostSnapshot,
): { summary: string; remedy: string | null } | null {
  const total = snapshot.devices.length;
  if (total === 0) return null;
  if (snapshot.devices.some((device) => device.readiness.status !== 'blocked')) return null;
  const tally = new Map<string, { remedy: string | null; count: number }>();
  for (const device of snapshot.devices) {
    const error = device.readiness.reasons.find((reason) => reason.severity === 'error');
    if (error === undefined) continue;
    const entry = tally.get(error.code) ?? { remedy: error.remedy, count: 0 };
    entry.count += 1;
    tally.set(error.code, entry);
  }
  const top = [...tally.entries()].sort((a, b) => b[1].count - a[1].count)[0];
  if (top === undefined) return { summary: 'no device can be passed through', remedy: null };
  const [code, { remedy, count }] = top;
  return {
    summary: `no device can be passed through: ${code} blocks ${count} of ${total} devices`,
    remedy,
  };
}
