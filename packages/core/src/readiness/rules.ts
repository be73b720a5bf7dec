/**
 * Readiness rules: can this PCI function be handed to a VM through vfio, and if not, why? Each
 * rule is a small pure function of the host and the device's IOMMU group, with a stable `code`
 * (a public contract: UIs, scripts and `scan --json` consumers key on it), one severity, a message
 * that names the devices, drivers and flags involved, and a remedy an operator can act on.
 *
 * vfio works per IOMMU group, not per device: the kernel only lets userspace open
 * /dev/vfio/<group> once no device of the group is left with a driver that does DMA on the host's
 * behalf. So most rules look at the whole group.
 */
import type {
  CriticalKind,
  DeviceFacts,
  Host,
  ReadinessReason,
  Severity,
} from '../inventory/schema';
import { comparePciAddresses } from '../pci/address';
import { isVfioDriverName } from '../vfio/select-variant';
import {
  clip,
  fewOf,
  firstOthers,
  list,
  MAX_NAMED_DEVICES,
  MAX_RELATED_DEVICES,
  quote,
} from './bounded-text';
import { criticalHits, endpointsBehind, groupView, isOnVfio } from './group-view';
import { describeHolder, IN_USE_REMEDY } from './holder';
import type { UnreadableMember } from './unreadable';

export { isDmaSafeDriver } from './group-view';

export interface RuleContext {
  host: Host;
  device: DeviceFacts;
  /** Every member of the device's IOMMU group, the device included; [] when it has no group. */
  group: readonly DeviceFacts[];
  byAddress: ReadonlyMap<string, DeviceFacts>;
  /** Members of the group whose own files could not be read (not in `group`); none when absent. */
  unreadable?: readonly UnreadableMember[];
}

export interface ReadinessRule {
  code: string;
  severity: Severity;
  check(ctx: RuleContext): ReadinessReason | null;
}

/** The kernel's viability test: userspace can open /dev/vfio/<group> only when this holds. */
export function isGroupViable(group: readonly DeviceFacts[]): boolean {
  return groupView(group).unsafe.length === 0;
}

/** `0000:01:00.1 (GA102 High Definition Audio Controller)`: an address alone means little to people. */
function label(device: DeviceFacts): string {
  return `${device.address} (${quote(device.names.device ?? device.names.className)})`;
}

type MakeReason = (
  message: string,
  remedy: string | null,
  related?: readonly string[],
) => ReadinessReason;

/**
 * Builds a rule whose reasons carry its code and severity, so the two cannot drift apart, and
 * whose text and related list are bounded whatever the input (see ./bounded-text).
 */
function rule(
  code: string,
  severity: Severity,
  check: (ctx: RuleContext, make: MakeReason) => ReadinessReason | null,
): ReadinessRule {
  const make: MakeReason = (message, remedy, related = []) => ({
    code,
    severity,
    message: clip(message),
    remedy: remedy === null ? null : clip(remedy),
    related: related.slice(0, MAX_RELATED_DEVICES),
  });
  return { code, severity, check: (ctx) => check(ctx, make) };
}

/** A cmdline flag value such as `off` or `on,sm_on` contains this option. */
function hasOption(value: string | null, option: string): boolean {
  return (value ?? '').split(',').includes(option);
}

function cmdlineWords(host: Host): string[] {
  return host.cmdline.raw.split(/\s+/).filter((w) => w.length > 0);
}

// ---------------------------------------------------------------------------------------------

const iommuOff = rule('iommu-off', 'error', ({ host, device }, make) => {
  if (host.iommu.enabled) return null;
  const { cmdline } = host;
  const offending: string[] = [];
  if (hasOption(cmdline.intelIommu, 'off'))
    offending.push(`intel_iommu=${quote(cmdline.intelIommu ?? '')}`);
  if (hasOption(cmdline.amdIommu, 'off'))
    offending.push(`amd_iommu=${quote(cmdline.amdIommu ?? '')}`);
  if (hasOption(cmdline.iommu, 'off')) offending.push(`iommu=${quote(cmdline.iommu ?? '')}`);

  let message = `The IOMMU is off: the kernel created no IOMMU groups, so vfio cannot fence ${device.address}'s DMA away from host memory.`;
  if (offending.length > 0) {
    const flags = list(offending.map((f) => `\`${f}\``));
    message += ` The kernel command line has ${flags}, which turn${offending.length === 1 ? 's' : ''} it off.`;
  }

  const steps: string[] = [];
  if (offending.length > 0) {
    steps.push(`Remove ${list(offending.map((f) => `\`${f}\``))} from the kernel command line.`);
  }
  if (host.virtualMachine) {
    steps.push(
      "This host is itself a virtual machine: its hypervisor must expose a virtual IOMMU, e.g. QEMU `-machine q35 -device intel-iommu,intremap=on,caching-mode=on` (libvirt `<iommu model='intel'>`), with `intel_iommu=on` on this guest's kernel command line.",
    );
  } else {
    switch (host.cpuVendor) {
      case 'intel':
        steps.push(
          'Enable VT-d (Intel Virtualization Technology for Directed I/O) in the firmware setup and add `intel_iommu=on` to the kernel command line, then reboot.',
        );
        break;
      case 'amd':
        steps.push(
          'The AMD IOMMU is on by default in Linux: enable AMD-Vi/IOMMU in the firmware setup (a separate setting from SVM), then reboot.',
        );
        break;
      case 'arm':
        steps.push(
          'Enable the SMMU in the firmware so the ACPI IORT table or device tree describes it, and use a kernel with the arm-smmu-v3 (or arm-smmu) driver, then reboot.',
        );
        break;
      default:
        steps.push(
          'Enable the IOMMU in the firmware setup (VT-d, AMD-Vi or SMMU); on Intel also add `intel_iommu=on` to the kernel command line; then reboot.',
        );
    }
  }
  return make(message, steps.join(' '));
});

const noIommuGroup = rule('no-iommu-group', 'error', ({ host, device }, make) => {
  if (!host.iommu.enabled || device.iommuGroup !== null) return null;
  const { units: all } = host.iommu;
  const more = all.length > MAX_NAMED_DEVICES ? ` and ${all.length - MAX_NAMED_DEVICES} more` : '';
  const units =
    all.length > 0 ? ` (${all.slice(0, MAX_NAMED_DEVICES).map(quote).join(', ')}${more})` : '';
  return make(
    `The IOMMU is on${units} but ${device.address} is in no IOMMU group: the IOMMU does not translate its DMA, so vfio cannot take it.`,
    "Check `dmesg` for DMAR, AMD-Vi or SMMU messages about this device: the firmware's IOMMU table (DMAR, IVRS or IORT) probably does not cover its slot. Update the firmware or use another slot.",
  );
});

const notEndpoint = rule('not-endpoint', 'error', ({ device, byAddress }, make) => {
  if (device.kind !== 'bridge') return null;
  const behind = endpointsBehind(byAddress, device.address);
  const remedy =
    behind.length > 0
      ? `Pass through the devices behind it instead: ${fewOf(behind)}.`
      : 'Pass through the endpoint devices behind it instead.';
  return make(
    `${device.address} is a ${quote(device.names.className)} (class ${device.classCode}): a bridge routes traffic for the devices behind it, cannot be handed to a VM, and vfio-pci refuses it.`,
    remedy,
    behind,
  );
});

/** Keyed by every CriticalKind, so a new kind fails to compile until it is worded here. */
const CRITICAL_ROLE: Readonly<Record<CriticalKind, { what: string; move: string }>> = {
  'root-disk': {
    what: "controls the host's root disk",
    move: 'boot the host from a disk on another controller',
  },
  'default-route': {
    what: "carries the host's default route",
    move: "move the host's default route to a NIC outside the group",
  },
  'boot-vga-console': {
    what: 'is the boot VGA device the host console draws on',
    move: 'make another GPU the primary display in the firmware, or stop the console using it (e.g. `video=efifb:off`, no fbcon)',
  },
};

const hostCritical = rule('host-critical', 'error', ({ host, device, group }, make) => {
  // Without a group the device still moves alone, so its own role still counts.
  const { hits, pfOfVf } = criticalHits(group.length > 0 ? group : [device], host);
  if (hits.length === 0) return null;

  // The device's own role first, then a few of the others (a group may hold many).
  const own = hits.filter((c) => c.address === device.address);
  const shown = [...own, ...firstOthers(hits, device.address)];
  const sentences = shown.map((c) => {
    const role = CRITICAL_ROLE[c.kind].what;
    const pf = pfOfVf.get(c.address);
    if (pf !== undefined) {
      return `${c.address}, a VF of ${pf} that disappears when ${pf} leaves its driver, ${role} (${quote(c.detail)})`;
    }
    return c.address === device.address
      ? `${device.address} ${role} (${quote(c.detail)})`
      : `${c.address}, in the same IOMMU group ${device.iommuGroup ?? '?'} as ${device.address}, ${role} (${quote(c.detail)})`;
  });
  const more = hits.length - shown.length;
  if (more > 0) sentences.push(`${more} more host-critical device${more === 1 ? '' : 's'}`);
  const shared = hits.length > own.length;
  const message = `${sentences.join('; ')}${shared ? '; the whole group moves to vfio together' : ''}, so taking it would take the host down.`;
  const moves = [...new Set(hits.map((c) => CRITICAL_ROLE[c.kind].move))];
  const remedy = shared
    ? `Put ${device.address} in a slot with its own IOMMU group (e.g. a CPU root port), or ${list(moves)}.`
    : `Leave ${device.address} to the host, or ${list(moves)} first.`;
  const related = firstOthers(hits, device.address, MAX_RELATED_DEVICES).map((c) => c.address);
  return make(message, remedy, related);
});

/**
 * A member the agent could not read may be anything (the root disk's controller, a NIC on a host
 * driver): the group cannot be judged, so every member is blocked and no plan moves it.
 */
const groupMemberUnreadable = rule('group-member-unreadable', 'error', (ctx, make) => {
  const unreadable = ctx.unreadable ?? [];
  if (unreadable.length === 0) return null;
  const groupId = ctx.device.iommuGroup ?? '?';
  // Only the first few are worded: every member of the group carries this reason.
  const named = unreadable
    .slice(0, MAX_NAMED_DEVICES)
    .map((m) => `${m.address}${m.driver === null ? '' : ` on ${m.driver}`} (${m.why})`);
  const one = unreadable.length === 1;
  const first = unreadable[0]?.address ?? '';
  return make(
    `IOMMU group ${groupId} also holds ${fewOf(named, unreadable.length)}, whose sysfs files could not be read: what ${one ? 'it is' : 'they are'} and what ${one ? 'it does' : 'they do'} for the host is unknown, and vfio would move ${one ? 'it' : 'them'} with ${ctx.device.address}, so no member of the group may move.`,
    `Check ${one ? 'the device' : 'each'} with \`lspci -vvv -s ${first}\` and \`dmesg\` (a function whose files read as garbage has usually fallen off the bus or has a firmware fault); fix, reseat or remove it, or reboot, then let the agent scan again.`,
    unreadable.slice(0, MAX_RELATED_DEVICES).map((m) => m.address),
  );
});

const groupNotViable = rule('group-not-viable', 'warning', ({ device, group }, make) => {
  if (!isOnVfio(device) || group.length === 0) return null;
  // A device on vfio is DMA-safe, so it is never among the blockers.
  const blockers = groupView(group).unsafe;
  if (blockers.length === 0) return null;
  const groupId = device.iommuGroup ?? '?';
  const few = blockers.slice(0, MAX_RELATED_DEVICES);
  const named = few.map((m) => `${label(m)} on ${m.driver ?? 'no driver'}`);
  const rebinds = few.map((m) => `${m.address} to ${m.vfio?.driver ?? 'vfio-pci'}`);
  return make(
    `${device.address} is on ${device.driver ?? 'vfio'}, but IOMMU group ${groupId} also holds ${fewOf(named, blockers.length)}: while a device of the group is on a host driver, /dev/vfio/${groupId} cannot be used.`,
    `Bind ${fewOf(rebinds, blockers.length)} as well (or unbind ${blockers.length === 1 ? 'it' : 'them'}), so the whole group is on vfio.`,
    few.map((m) => m.address),
  );
});

const noInterruptRemapping = rule('no-interrupt-remapping', 'warning', ({ host }, make) => {
  if (!host.iommu.enabled || host.iommu.interruptRemapping !== 'disabled') return null;
  const disabling = [
    ...new Set(cmdlineWords(host).filter((w) => w === 'intremap=off' || w === 'nointremap')),
  ];
  const flags =
    disabling.length > 0
      ? ` The kernel command line has ${list(disabling.map((w) => `\`${w}\``))}.`
      : '';
  return make(
    `Interrupt remapping is off (no IR- interrupt chips in /proc/interrupts): a guest could forge MSI writes and inject interrupts into the host, so vfio_iommu_type1 refuses the device unless allow_unsafe_interrupts=1 is set.${flags}`,
    `Enable interrupt remapping (VT-d/AMD-Vi interrupt remapping and x2APIC in the firmware${disabling.length > 0 ? `; remove ${list(disabling.map((w) => `\`${w}\``))}` : ''}). Only for trusted guests, load vfio_iommu_type1 with allow_unsafe_interrupts=1 instead.`,
  );
});

const acsOverride = rule('acs-override', 'warning', ({ host, device }, make) => {
  const value = host.cmdline.pcieAcsOverride;
  if (value === null || !host.iommu.enabled || device.iommuGroup === null) return null;
  return make(
    `The kernel command line has \`pcie_acs_override=${quote(value)}\`: IOMMU group ${device.iommuGroup} may have been split by that patch rather than by real ACS isolation, so devices outside the group can still reach ${device.address} with peer-to-peer DMA.`,
    'Give the device only to a trusted guest; for real isolation, remove `pcie_acs_override=` and use a slot whose upstream ports support ACS (typically a CPU root port).',
  );
});

const sriovVfsEnabled = rule('sriov-vfs-enabled', 'warning', ({ device }, make) => {
  const sriov = device.sriov;
  // A PF already on vfio keeps its VFs (vfio-pci can manage SR-IOV); only unbinding a host driver destroys them.
  if (sriov === null || sriov.numVfs === 0 || isOnVfio(device)) return null;
  const vfs = [...sriov.vfs].sort(comparePciAddresses);
  const shown =
    vfs.length > MAX_NAMED_DEVICES
      ? `${vfs.slice(0, MAX_NAMED_DEVICES).join(', ')} and ${vfs.length - MAX_NAMED_DEVICES} more`
      : vfs.join(', ');
  return make(
    `${device.address} is an SR-IOV physical function with ${sriov.numVfs} virtual function${sriov.numVfs === 1 ? '' : 's'} enabled${shown ? ` (${shown})` : ''}: unbinding its driver${device.driver === null ? '' : ` ${device.driver}`} destroys them and cuts off whatever uses them.`,
    `Pass through a virtual function instead, or move the VFs' users off and run \`echo 0 > /sys/bus/pci/devices/${device.address}/sriov_numvfs\` first.`,
    vfs,
  );
});

const noResetMethod = rule('no-reset-method', 'warning', ({ device }, make) => {
  if (device.kind !== 'endpoint' || device.resettable || device.resetMethods.length > 0)
    return null;
  return make(
    `${device.address} has no reset method (no FLR, PM or bus reset): a VM gets it in whatever state the host or the previous VM left it, and many devices fail to start again after the first VM shutdown.`,
    'Expect to reboot the host between VM runs, or look for a device-specific reset quirk or module (e.g. vendor-reset for older AMD GPUs).',
  );
});

const vfioDriverAmbiguous = rule('vfio-driver-ambiguous', 'warning', ({ device }, make) => {
  const vfio = device.vfio;
  if (vfio === null || !vfio.ambiguous) return null;
  const fewest = Math.min(...vfio.candidates.map((c) => c.wildcards));
  const tied = vfio.candidates.filter((c) => c.wildcards === fewest);
  const modules = fewOf(tied.map((c) => `${c.module} (line ${c.line})`));
  return make(
    `${tied.length} vfio drivers match ${device.address} equally well, ${modules}, with ${fewest} wildcards each; ${vfio.module} was chosen because it comes first in modules.alias, as libvirt would choose.`,
    `Check that ${vfio.module} is right for this device; if not, bind the intended driver explicitly.`,
  );
});

const vfioFallback = rule('vfio-fallback', 'info', ({ host, device }, make) => {
  const vfio = device.vfio;
  if (vfio === null || vfio.source !== 'fallback') return null;
  const { path, vfioAliases } = host.modulesAlias;
  if (path === null) {
    return make(
      `No modules.alias was found, so no vfio variant driver could be looked up for ${device.address}; it gets the generic ${vfio.driver}.`,
      "Install the running kernel's modules (depmod writes modules.alias) if a variant driver such as mlx5_vfio_pci or nvgrace_gpu_vfio_pci may apply.",
    );
  }
  const why =
    vfioAliases === 0
      ? `${quote(path)} has no vfio_pci aliases at all: kernels before 5.16 have no vfio variant drivers`
      : `none of the ${vfioAliases} vfio_pci aliases in ${quote(path)} matches it`;
  return make(`${device.address} gets the generic ${vfio.driver}: ${why}.`, null);
});

const driverOverrideForeign = rule('driver-override-foreign', 'info', ({ device }, make) => {
  const current = device.driverOverride;
  if (current === null || isVfioDriverName(current) || device.kind !== 'endpoint') return null;
  const target = device.vfio?.driver ?? 'vfio-pci';
  return make(
    `driver_override of ${device.address} already names ${quote(current)}; moving the device to vfio replaces it with ${target}.`,
    `Find what sets it (driverctl, a udev rule, a boot script) so ${quote(current)} does not take the device back at the next boot.`,
  );
});

const groupShared = rule('group-shared', 'info', ({ device, group }, make) => {
  if (device.kind !== 'endpoint') return null;
  const { endpoints, endpointAddresses } = groupView(group);
  const total = endpoints.length - (endpointAddresses.has(device.address) ? 1 : 0);
  if (total <= 0) return null;
  // Names a few and counts the rest: every member carries this reason, the list is on the group.
  const others = firstOthers(endpoints, device.address, MAX_RELATED_DEVICES);
  const named = fewOf(others.map(label), total);
  const count = total > MAX_NAMED_DEVICES ? ` (${total + 1} endpoints in all)` : '';
  return make(
    `IOMMU group ${device.iommuGroup ?? '?'} also holds ${named}${count}: all of its endpoints move to vfio together and can only go to the same VM.`,
    null,
    others.map((m) => m.address),
  );
});

/**
 * A VM holds the device, or another member of its group (a group goes to one VM as a whole): it
 * cannot be moved anywhere, and no other VM can have it, until the holder lets go.
 */
const inUse = rule('in-use', 'error', ({ device, group }, make) => {
  const members = group.length > 0 ? group : [device];
  const held = members.filter((d) => d.inUse);
  const first = held[0];
  if (first === undefined) return null;
  const others = held.filter((d) => d.address !== device.address);
  const self = device.inUse
    ? `${device.address} is in use by ${describeHolder(device.holder)}`
    : `IOMMU group ${device.iommuGroup ?? '?'} is in use: ${first.address} is held by ${describeHolder(first.holder)}`;
  const more =
    others.length > (device.inUse ? 0 : 1)
      ? ` (${fewOf(others.map((d) => d.address))} ${others.length === 1 ? 'is' : 'are'} held too)`
      : '';
  return make(
    `${self}${more}.`,
    IN_USE_REMEDY,
    others.map((d) => d.address),
  );
});

/** In evaluation order; assessDevice sorts the reasons by severity, stably, so this order breaks ties. */
export const readinessRules: readonly ReadinessRule[] = [
  inUse,
  iommuOff,
  noIommuGroup,
  notEndpoint,
  hostCritical,
  groupMemberUnreadable,
  groupNotViable,
  noInterruptRemapping,
  acsOverride,
  sriovVfsEnabled,
  noResetMethod,
  vfioDriverAmbiguous,
  groupShared,
  vfioFallback,
  driverOverrideForeign,
];
