/**
 * What the readiness rules derive from a whole IOMMU group (or a whole snapshot), computed once
 * rather than once per member. Every member of a group is assessed with the same group, so
 * deriving these per member made assessing a host cost the square of its largest group.
 *
 * Cached by the identity of the (readonly) arrays and maps a RuleContext holds: assessSnapshot
 * passes one shared array per group and one map per snapshot, so each is derived once. Nothing is
 * ever written to those inputs, so a cached view cannot go stale; a WeakMap lets it go with them.
 */
import type { CriticalDevice, DeviceFacts, DeviceKind, Host } from '../inventory/schema';
import { comparePciAddresses } from '../pci/address';
import { isVfioDriverName } from '../vfio/select-variant';

/**
 * Drivers the kernel lets share an IOMMU group with a vfio-owned device: those that set
 * `driver_managed_dma` (vfio-pci and its variants, pci-stub) or no driver at all. Port drivers of
 * bridges also set it (pcieport since 5.19; shpchp drives hotplug bridges the same way), which is
 * why a root port in the group does not stop its GPU from being assigned.
 */
export function isDmaSafeDriver(driver: string | null, kind: DeviceKind): boolean {
  if (driver === null) return true;
  if (isVfioDriverName(driver) || driver === 'pci-stub') return true;
  return kind === 'bridge' && (driver === 'pcieport' || driver === 'shpchp');
}

export function isOnVfio(device: DeviceFacts): boolean {
  return device.driver !== null && isVfioDriverName(device.driver);
}

export interface GroupView {
  /** The group's endpoints, in address order. */
  endpoints: readonly DeviceFacts[];
  /** Their addresses. */
  endpointAddresses: ReadonlySet<string>;
  /** Members on a driver that is not DMA-safe (see isDmaSafeDriver), in address order. */
  unsafe: readonly DeviceFacts[];
}

const views = new WeakMap<readonly DeviceFacts[], GroupView>();

export function groupView(group: readonly DeviceFacts[]): GroupView {
  let view = views.get(group);
  if (view === undefined) {
    const sorted = [...group].sort((a, b) => comparePciAddresses(a.address, b.address));
    const endpoints = sorted.filter((m) => m.kind === 'endpoint');
    view = {
      endpoints,
      endpointAddresses: new Set(endpoints.map((m) => m.address)),
      unsafe: sorted.filter((m) => !isDmaSafeDriver(m.driver, m.kind)),
    };
    views.set(group, view);
  }
  return view;
}

/** What the host-critical rule finds in a group: the same for every member. */
export interface CriticalHits {
  /** Critical devices in the group, or VFs (anywhere) of its PFs on a host driver; in address order. */
  hits: readonly CriticalDevice[];
  /** For a hit that is such a VF: its PF in the group. */
  pfOfVf: ReadonlyMap<string, string>;
}

const criticalViews = new WeakMap<
  readonly DeviceFacts[],
  { critical: readonly CriticalDevice[]; found: CriticalHits }
>();

/** `moving` is the group (or the device alone, when it has none). */
export function criticalHits(moving: readonly DeviceFacts[], host: Host): CriticalHits {
  const cached = criticalViews.get(moving);
  if (cached !== undefined && cached.critical === host.critical) return cached.found;
  const members = new Set(moving.map((m) => m.address));
  // Unbinding a PF's driver disables SR-IOV and destroys its VFs, wherever their own groups are:
  // a VF that carries the default route is as critical to the PF's group as the PF itself.
  const pfOfVf = new Map<string, string>();
  for (const m of moving) {
    if (m.sriov === null || isOnVfio(m)) continue;
    for (const vf of m.sriov.vfs) if (!members.has(vf)) pfOfVf.set(vf, m.address);
  }
  const hits = host.critical
    .filter((c) => members.has(c.address) || pfOfVf.has(c.address))
    .sort((a, b) => comparePciAddresses(a.address, b.address));
  const found = { hits, pfOfVf };
  criticalViews.set(moving, { critical: host.critical, found });
  return found;
}

const childIndexes = new WeakMap<
  ReadonlyMap<string, DeviceFacts>,
  ReadonlyMap<string, readonly string[]>
>();

/** The endpoints whose `parent` is `bridge`, in address order. */
export function endpointsBehind(
  byAddress: ReadonlyMap<string, DeviceFacts>,
  bridge: string,
): readonly string[] {
  let index = childIndexes.get(byAddress);
  if (index === undefined) {
    const children = new Map<string, string[]>();
    for (const d of byAddress.values()) {
      if (d.parent === null || d.kind !== 'endpoint') continue;
      const list = children.get(d.parent);
      if (list === undefined) children.set(d.parent, [d.address]);
      else list.push(d.address);
    }
    for (const list of children.values()) list.sort(comparePciAddresses);
    index = children;
    childIndexes.set(byAddress, index);
  }
  return index.get(bridge) ?? [];
}
