/**
 * Readiness of every device of a host: runs the rules of ./rules over each device with its IOMMU
 * group, and turns the reasons into one status. Pure, so an agent, a server holding an older
 * agent's facts, and tests all assess the same facts the same way.
 */
import type {
  Device,
  DeviceFacts,
  HostFactsSnapshot,
  HostSnapshot,
  Readiness,
  ReadinessReason,
  Severity,
} from '../inventory/schema';
import { comparePciAddresses } from '../pci/address';
import { isVfioDriverName } from '../vfio/select-variant';
import { isGroupViable, type RuleContext, readinessRules } from './rules';
import { unreadableByGroup } from './unreadable';

const SEVERITY_RANK: Readonly<Record<Severity, number>> = { error: 0, warning: 1, info: 2 };

/**
 * Assesses one device. Only error reasons block; a device already on vfio in a viable group is
 * `bound` whatever warnings it has (they describe how it got there, not whether it works).
 * Reasons come errors first, then warnings, then info, each in rule order.
 */
export function assessDevice(ctx: RuleContext): Readiness {
  const reasons: ReadinessReason[] = [];
  for (const rule of readinessRules) {
    const found = rule.check(ctx);
    if (found !== null) reasons.push(found);
  }
  // Array#sort is stable, so rule order survives within a severity.
  reasons.sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]);

  const { device, group } = ctx;
  const onVfio = device.driver !== null && isVfioDriverName(device.driver);
  let status: Readiness['status'];
  // Held by a VM outranks every verdict: whatever the rules say, a user has it open right now.
  if (onVfio && device.inUse) status = 'in-use';
  else if (reasons.some((r) => r.severity === 'error')) status = 'blocked';
  else if (onVfio && group.length > 0 && isGroupViable(group)) {
    status = 'bound';
  } else status = 'ready';
  return { status, reasons };
}

/**
 * Group members keyed by group id. Membership comes from each device's own `iommuGroup` and from
 * the snapshot's group listing, so a device missing from one of the two is still counted.
 */
function groupMembers(facts: HostFactsSnapshot, byAddress: ReadonlyMap<string, DeviceFacts>) {
  const groups = new Map<number, Map<string, DeviceFacts>>();
  const add = (id: number, device: DeviceFacts) => {
    let members = groups.get(id);
    if (members === undefined) {
      members = new Map();
      groups.set(id, members);
    }
    members.set(device.address, device);
  };
  for (const device of facts.devices) {
    if (device.iommuGroup !== null) add(device.iommuGroup, device);
  }
  for (const group of facts.groups) {
    for (const address of group.devices) {
      const device = byAddress.get(address);
      if (device !== undefined) add(group.id, device);
    }
  }
  const sorted = new Map<number, DeviceFacts[]>();
  for (const [id, members] of groups) {
    sorted.set(
      id,
      [...members.values()].sort((a, b) => comparePciAddresses(a.address, b.address)),
    );
  }
  return sorted;
}

/** Adds `readiness` to every device of a snapshot; everything else is passed through unchanged. */
export function assessSnapshot(facts: HostFactsSnapshot): HostSnapshot {
  const slices = assessSnapshotInSlices(facts);
  for (;;) {
    const step = slices.next();
    if (step.done === true) return step.value;
  }
}

/** Devices per slice of assessSnapshotInSlices. */
export const ASSESS_SLICE_DEVICES = 512;

/**
 * assessSnapshot one slice of devices per `next()`, the result the same: a server can let other
 * work run between the slices of a host at the protocol's limit (4,096 devices). Pure: it only
 * pauses, the caller decides what runs meanwhile.
 */
export function* assessSnapshotInSlices(
  facts: HostFactsSnapshot,
  sliceDevices: number = ASSESS_SLICE_DEVICES,
): Generator<void, HostSnapshot, void> {
  const byAddress = new Map(facts.devices.map((d) => [d.address, d] as const));
  const groups = groupMembers(facts, byAddress);
  const unreadable = unreadableByGroup(facts);
  const devices: Device[] = [];
  for (const device of facts.devices) {
    if (devices.length > 0 && devices.length % sliceDevices === 0) yield;
    const id = device.iommuGroup;
    // One array per group, shared by its members, so what rules derive from it is derived once.
    const group = id === null ? [] : (groups.get(id) ?? [device]);
    devices.push({
      ...device,
      readiness: assessDevice({
        host: facts.host,
        device,
        group,
        byAddress,
        unreadable: id === null ? [] : (unreadable.get(id) ?? []),
      }),
    });
  }
  return { ...facts, devices };
}
