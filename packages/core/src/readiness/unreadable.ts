/**
 * IOMMU group members whose own sysfs files could not be read (a vendor id of "zzz", no class, a
 * modalias that is not one): the agent leaves them out of `devices`, but vfio still moves them
 * with their group, so their group must not be judged, or planned, as if they were not there.
 *
 * The group listing (/sys/kernel/iommu_groups/N/devices) names every member even when a member's
 * own files are garbage, so a listed member with no entry in `devices` is such a member. Agents
 * since the `problems[].device` field also report what they could read of it (its group and
 * driver) and what was wrong; older agents report only a problem whose source is the device's
 * sysfs directory, which gives the what.
 */
import type { HostFactsSnapshot } from '../inventory/schema';
import { clip } from './bounded-text';

export interface UnreadableMember {
  address: string;
  /** Its driver, when its `driver` link could be read. */
  driver: string | null;
  /** What could not be read, as the agent said it. */
  why: string;
}

/** A problem's text about one device, kept short: it is quoted in every member's reason. */
const MAX_WHY = 200;
const NOT_REPORTED = 'the agent reported no facts for it';

/** The unreadable members of every group that has any, keyed by group id, in listing order. */
export function unreadableByGroup(
  facts: Pick<HostFactsSnapshot, 'devices' | 'groups' | 'problems'>,
): Map<number, UnreadableMember[]> {
  const readable = new Set(facts.devices.map((d) => d.address));
  const described = new Map<string, { group: number | null; driver: string | null; why: string }>();
  const bySource = new Map<string, string>();
  for (const problem of facts.problems) {
    const device = problem.device;
    if (device !== undefined) {
      described.set(device.address, {
        group: device.iommuGroup,
        driver: device.driver,
        why: clip(problem.message, MAX_WHY),
      });
    } else {
      // An older agent's `/sys/bus/pci/devices/<address>`: the address is the last component.
      const last = problem.source.slice(problem.source.lastIndexOf('/') + 1);
      if (!bySource.has(last)) bySource.set(last, clip(problem.message, MAX_WHY));
    }
  }

  const result = new Map<number, UnreadableMember[]>();
  const placed = new Set<string>();
  const add = (group: number, address: string) => {
    const key = `${group}/${address}`;
    if (readable.has(address) || placed.has(key)) return;
    placed.add(key);
    const about = described.get(address);
    const member: UnreadableMember = {
      address,
      driver: about?.driver ?? null,
      why: about?.why ?? bySource.get(address) ?? NOT_REPORTED,
    };
    const members = result.get(group);
    if (members === undefined) result.set(group, [member]);
    else members.push(member);
  };
  for (const group of facts.groups) for (const address of group.devices) add(group.id, address);
  // A reported member the listing lacks (the listing is the agent's too, but may be partial).
  for (const [address, about] of described) if (about.group !== null) add(about.group, address);
  return result;
}
