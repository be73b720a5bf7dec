/**
 * The inventory schemas (../inventory/schema) with the bounds a wire format needs. The inventory
 * model describes what an agent reads; on the wire the server parses what any peer sends, so every
 * string and array gets a maximum that no real host comes near but that stops a bad peer from
 * making the server allocate without limit. Each schema extends its inventory counterpart, so the
 * inferred types are exactly `Host`, `Device`, `HostSnapshot`..., and a field added to the inventory
 * reaches the wire (test/protocol-bounds.test.ts then fails until it is bounded here).
 */
import { z } from 'zod';
import {
  cmdlineFlagsSchema,
  criticalDeviceSchema,
  deviceHolderSchema,
  deviceNamesSchema,
  deviceSchema,
  hostSchema,
  hostSnapshotSchema,
  iommuGroupSchema,
  keptBySchema,
  kernelNameSchema,
  pciAddressSchema,
  problemSchema,
  readinessReasonSchema,
  readinessSchema,
  severitySchema,
  sriovSchema,
  vfioCandidateSchema,
  vfioSelectionSchema,
} from '../inventory/schema';

/**
 * Devices (PCI functions) in one snapshot or delta list, and addresses in a snapshot's whole IOMMU
 * group listing (so also the members of one group). Real hosts have a few hundred; SR-IOV can make
 * it a couple of thousand (eight PFs with 256 VFs each). The server assesses, stores and serves a
 * snapshot at this limit in bounded time and memory (docs/protocol.md, "Limits and the worst case").
 */
export const MAX_WIRE_DEVICES = 4096;
/** IOMMU groups: at most one per device. */
export const MAX_WIRE_GROUPS = MAX_WIRE_DEVICES;
/** Problems the agent reports instead of failing. */
export const MAX_WIRE_PROBLEMS = 1024;
/** Readiness reasons on one device. */
export const MAX_WIRE_REASONS = 64;
/** Free text: messages, remedies, explanations, problem sources. */
export const MAX_WIRE_TEXT = 4096;
/** Names: hostnames, pci.ids names, kernel release, identifiers. */
export const MAX_WIRE_NAME = 512;

const text = z.string().max(MAX_WIRE_TEXT);
const name = z.string().max(MAX_WIRE_NAME);
/** A Linux path: PATH_MAX is 4096. */
const path = z.string().max(4096);
/** Short kernel tokens: iommu unit names, module names, /dev/vfio entries, reset methods, ids. */
const token = z.string().max(64);
/** A list of PCI addresses that can name every device of the host (a group, a PF's VFs). */
const addresses = z.array(pciAddressSchema).max(MAX_WIRE_DEVICES);

export const wireCmdlineFlagsSchema = cmdlineFlagsSchema.extend({
  intelIommu: name.nullable(),
  amdIommu: name.nullable(),
  iommu: name.nullable(),
  iommuPassthrough: name.nullable(),
  pcieAcsOverride: name.nullable(),
  vfioPciIds: z.array(token).max(1024),
  // COMMAND_LINE_SIZE is 2048 on x86 and at most 4096 on other architectures.
  raw: text,
});

export const wireCriticalDeviceSchema = criticalDeviceSchema.extend({ detail: text });

export const wireHostSchema = hostSchema.extend({
  // A fully qualified name is at most 253 characters.
  hostname: z.string().max(253),
  machineId: name.nullable(),
  kernelRelease: name.nullable(),
  cmdline: wireCmdlineFlagsSchema,
  iommu: hostSchema.shape.iommu.extend({ units: z.array(token).max(1024) }),
  vfio: hostSchema.shape.vfio.extend({
    modulesLoaded: z.array(token).max(1024),
    // `vfio`, one node per group, `noiommu-N`: bounded by the groups plus a little.
    devNodes: z.array(token).max(MAX_WIRE_GROUPS + 16),
  }),
  modulesAlias: hostSchema.shape.modulesAlias.extend({ path: path.nullable() }),
  pciIdsPath: path.nullable(),
  critical: z.array(wireCriticalDeviceSchema).max(256),
});

export const wireReadinessReasonSchema = readinessReasonSchema.extend({
  code: z
    .string()
    .max(64)
    .regex(/^[a-z0-9-]+$/),
  severity: severitySchema,
  message: text,
  remedy: text.nullable(),
  // A shared-group reason names every other member, and a group can hold the whole host.
  related: addresses,
});

export const wireReadinessSchema = readinessSchema.extend({
  reasons: z.array(wireReadinessReasonSchema).max(MAX_WIRE_REASONS),
});

export const wireVfioSelectionSchema = vfioSelectionSchema.extend({
  candidates: z.array(vfioCandidateSchema.extend({ pattern: name })).max(256),
  explanation: text,
});

export const wireDeviceSchema = deviceSchema.extend({
  modalias: name.nullable(),
  // The kernel caps driver_override at a page.
  driverOverride: z.string().max(4096).nullable(),
  sriov: sriovSchema.extend({ vfs: addresses }).nullable(),
  resetMethods: z.array(token).max(32),
  netInterfaces: z.array(token).max(256),
  names: deviceNamesSchema.extend({
    vendor: name.nullable(),
    device: name.nullable(),
    subsystem: name.nullable(),
    className: name,
  }),
  vfio: wireVfioSelectionSchema.nullable(),
  vfioDriver: kernelNameSchema.nullable(),
  // comm is at most 15 bytes; a VM name comes from a command line, which can be long.
  holder: deviceHolderSchema
    .extend({ command: name, vm: name.nullable() })
    .nullable()
    .default(null),
  keptBy: z
    .array(keptBySchema.extend({ source: path }))
    .max(8)
    .default([]),
  readiness: wireReadinessSchema,
});

/**
 * A device without its readiness: what the server keeps of an agent's device, since it discards
 * the agent's verdicts and assesses the facts itself. zod drops the `readiness` member unvalidated.
 */
export const wireDeviceFactsSchema = wireDeviceSchema.omit({ readiness: true });

export const wireIommuGroupSchema = iommuGroupSchema.extend({ devices: addresses });

export const wireProblemSchema = problemSchema.extend({ source: text, message: text });

export const wireHostSnapshotSchema = hostSnapshotSchema.extend({
  collectedAt: z.string().max(64),
  host: wireHostSchema,
  devices: z.array(wireDeviceSchema).max(MAX_WIRE_DEVICES),
  groups: z.array(wireIommuGroupSchema).max(MAX_WIRE_GROUPS),
  problems: z.array(wireProblemSchema).max(MAX_WIRE_PROBLEMS),
});

/** A snapshot as the server keeps it: HostFactsSnapshot, the devices without readiness. */
export const wireHostFactsSnapshotSchema = wireHostSnapshotSchema.extend({
  devices: z.array(wireDeviceFactsSchema).max(MAX_WIRE_DEVICES),
});

/**
 * A PCI function is in one IOMMU group: a listing that names an address twice, or more addresses
 * than a snapshot may hold devices, describes no real host and is refused.
 */
export function refuseBadGroupListing(
  groups: readonly { id: number; devices: readonly string[] }[],
  ctx: z.core.$RefinementCtx,
  path: readonly (string | number)[],
): void {
  const seen = new Set<string>();
  for (const [index, group] of groups.entries()) {
    for (const address of group.devices) {
      if (seen.has(address)) {
        ctx.addIssue({
          code: 'custom',
          path: [...path, index, 'devices'],
          message: `${address} is listed in more than one IOMMU group`,
        });
        return;
      }
      seen.add(address);
    }
    if (seen.size > MAX_WIRE_DEVICES) {
      ctx.addIssue({
        code: 'custom',
        path: [...path, index, 'devices'],
        message: `the IOMMU groups list more than ${MAX_WIRE_DEVICES} devices in all`,
      });
      return;
    }
  }
}
