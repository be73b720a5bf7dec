/**
 * The planner's refusal of an IOMMU group with a member the agent could not read. A plan covers
 * the whole group, and such a member is not in the snapshot: vfio would move it (or leave it
 * behind) with no precondition, rollback or blast-radius entry. Refused in both directions, since
 * which of the group's devices a restore would touch cannot be known either.
 */
import type { Device, HostSnapshot } from '../inventory/schema';
import { fewOf } from '../readiness/bounded-text';
import { unreadableByGroup } from '../readiness/unreadable';
import type { PlanRefusal } from './schema';

export function unreadableGroupRefusal(snapshot: HostSnapshot, device: Device): PlanRefusal | null {
  const groupId =
    device.iommuGroup ??
    snapshot.groups.find((g) => g.devices.includes(device.address))?.id ??
    null;
  if (groupId === null) return null;
  const members = unreadableByGroup(snapshot).get(groupId) ?? [];
  if (members.length === 0) return null;
  const named = fewOf(members.map((m) => `${m.address} (${m.why})`));
  const verb = members.length === 1 ? 'is a member' : 'are members';
  return {
    code: 'group-unreadable',
    message: `IOMMU group ${groupId} of ${device.address} is not planned: ${named} ${verb} whose sysfs files could not be read, so what moving the group would do to the host cannot be known`,
    reasons: device.readiness.reasons.filter((r) => r.code === 'group-member-unreadable'),
  };
}
