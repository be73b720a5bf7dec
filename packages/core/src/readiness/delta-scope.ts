/**
 * Which devices a delta can change the readiness of, and which stored devices assessing them
 * needs: so that a server holding a 200-device host re-assesses (and reads back) a handful of
 * devices per delta instead of all of them.
 *
 * assessDevice reads the host, the device itself, its IOMMU group's members (by each device's own
 * `iommuGroup` and by the snapshot's group listing), and, for a bridge, the devices whose `parent`
 * it is (the `not-endpoint` rule). So when the host section, the group listing and the problems are
 * unchanged, a device's verdict can change only if it is one of the delta's devices, shares an
 * IOMMU group with one of them (before or after), or is the parent of one of them (before or
 * after). Assessing those exactly needs their groups' members and their children; nothing else.
 */
import type { DeviceFacts, DeviceKind, IommuGroup } from '../inventory/schema';
import type { SnapshotDelta } from '../protocol/delta';

/** What of a stored device the scope is computed from (columns, not the whole facts). */
export interface DeviceLinks {
  address: string;
  iommuGroup: number | null;
  parent: string | null;
  kind: DeviceKind;
}

export interface DeltaScope {
  /** Devices present after the delta whose readiness must be assessed again, in no order. */
  reassess: ReadonlySet<string>;
  /**
   * Stored devices whose facts are needed: what `reassess` reads (its groups' members, a bridge's
   * children), and every stored device the delta names (so applying the delta to just these finds
   * the same misfits as applying it to the whole host, and the changed ones' old rows are known).
   */
  load: ReadonlySet<string>;
  /** Groups whose listing assessing `reassess` reads. */
  groups: ReadonlySet<number>;
}

function linksOf(device: DeviceFacts): DeviceLinks {
  return {
    address: device.address,
    iommuGroup: device.iommuGroup,
    parent: device.parent,
    kind: device.kind,
  };
}

/**
 * The scope of `delta` over a host whose stored devices are `stored` and whose group listing is
 * `listing`; null when the delta changes the host section, the group listing or the problems
 * (rare; every device must then be assessed again).
 */
export function deltaScope(
  stored: readonly DeviceLinks[],
  listing: readonly IommuGroup[],
  delta: SnapshotDelta,
): DeltaScope | null {
  if (delta.host !== undefined || delta.groups !== undefined || delta.problems !== undefined) {
    return null;
  }
  const before = new Map(stored.map((d) => [d.address, d]));
  const after = new Map(before);
  for (const address of delta.devicesRemoved) after.delete(address);
  for (const device of [...delta.devicesChanged, ...delta.devicesAdded]) {
    after.set(device.address, linksOf(device));
  }
  const listed = new Map(listing.map((g) => [g.id, g.devices]));
  /** The groups whose listing names each address (one, where the listing and facts agree). */
  const listedIn = new Map<string, number[]>();
  for (const group of listing)
    for (const address of group.devices) push(listedIn, address, group.id);

  const named = [
    ...delta.devicesRemoved,
    ...delta.devicesChanged.map((d) => d.address),
    ...delta.devicesAdded.map((d) => d.address),
  ];
  const touchedGroups = new Set<number>();
  const reassess = new Set<string>();
  for (const address of named) {
    if (after.has(address)) reassess.add(address);
    for (const group of listedIn.get(address) ?? []) touchedGroups.add(group);
    for (const links of [before.get(address), after.get(address)]) {
      if (links === undefined) continue;
      if (links.iommuGroup !== null) touchedGroups.add(links.iommuGroup);
      if (links.parent !== null && after.has(links.parent)) reassess.add(links.parent);
    }
  }

  const membersByGroup = new Map<number, string[]>();
  const childrenOf = new Map<string, string[]>();
  for (const links of after.values()) {
    if (links.iommuGroup !== null) push(membersByGroup, links.iommuGroup, links.address);
    if (links.parent !== null) push(childrenOf, links.parent, links.address);
  }
  /** A group's members as assessSnapshot finds them: by their own group id, and by the listing. */
  const membersOf = (group: number): string[] => [
    ...(membersByGroup.get(group) ?? []),
    ...(listed.get(group) ?? []).filter((address) => after.has(address)),
  ];
  for (const group of touchedGroups) for (const address of membersOf(group)) reassess.add(address);

  const groups = new Set<number>();
  const load = new Set<string>(named.filter((address) => before.has(address)));
  for (const address of reassess) {
    const links = after.get(address);
    if (links === undefined) continue;
    load.add(address);
    if (links.iommuGroup !== null) {
      groups.add(links.iommuGroup);
      for (const member of membersOf(links.iommuGroup)) load.add(member);
    }
    if (links.kind === 'bridge') for (const child of childrenOf.get(address) ?? []) load.add(child);
  }
  // Devices the delta adds come from the delta, not from storage.
  for (const address of load) if (!before.has(address)) load.delete(address);
  return { reassess, load, groups };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}
