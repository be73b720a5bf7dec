/**
 * core's parseAgentMessageForServer for a large frame, a slice of a snapshot's devices per step,
 * so the event loop runs between them (finishYielding): validating a snapshot at the protocol's
 * limit (4,096 devices in 8 MiB) is several hundred milliseconds of CPU in one call otherwise.
 *
 * The same schemas, so a valid frame gives the same message, keys in the same order. Whatever is
 * not a well-formed snapshot, and any frame that fails a check, is handed to
 * parseAgentMessageForServer whole, so every error is exactly its error (a bad frame costs a
 * second parse; an agent sending them is cut off after a few, see maxBadFrames).
 */
import {
  type AgentMessageForServer,
  agentMessageForServerSchema,
  type DeviceFacts,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  MAX_WIRE_DEVICES,
  type ParsedMessage,
  parseAgentMessageForServer,
  wireDeviceFactsSchema,
} from '@vfio-fleet/core';

export const PARSE_SLICE_DEVICES = 512;

const sliceSchema = wireDeviceFactsSchema.array();

export function* parseAgentFrameInSlices(
  raw: Uint8Array,
): Generator<void, ParsedMessage<AgentMessageForServer>, void> {
  const whole = () => parseAgentMessageForServer(raw);
  if (raw.byteLength > MAX_SNAPSHOT_MESSAGE_BYTES) return whole();
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw));
  } catch {
    return whole();
  }
  const devices = snapshotDevices(value);
  if (devices === null || devices.length <= PARSE_SLICE_DEVICES) return whole();
  yield;
  const checked: DeviceFacts[] = [];
  const seen = new Set<string>();
  for (let start = 0; start < devices.length; start += PARSE_SLICE_DEVICES) {
    const slice = sliceSchema.safeParse(devices.slice(start, start + PARSE_SLICE_DEVICES));
    if (!slice.success) return whole();
    for (const device of slice.data) {
      if (seen.has(device.address)) return whole();
      seen.add(device.address);
      checked.push(device);
    }
    yield;
  }
  // Everything but the devices (checked above), with the same schema and refinements.
  const { snapshot } = value as { snapshot: Record<string, unknown> };
  const rest = agentMessageForServerSchema.safeParse({
    ...(value as object),
    snapshot: { ...snapshot, devices: [] },
  });
  if (!rest.success || rest.data.type !== 'snapshot') return whole();
  // Spread keeps the devices key where the schema put it, so the message hashes as the whole parse's.
  return {
    ok: true,
    message: { ...rest.data, snapshot: { ...rest.data.snapshot, devices: checked } },
  };
}

/** A snapshot message's devices array, if the frame is one with at most MAX_WIRE_DEVICES. */
function snapshotDevices(value: unknown): unknown[] | null {
  if (typeof value !== 'object' || value === null) return null;
  const { type, snapshot } = value as { type?: unknown; snapshot?: unknown };
  if (type !== 'snapshot' || typeof snapshot !== 'object' || snapshot === null) return null;
  const { devices } = snapshot as { devices?: unknown };
  return Array.isArray(devices) && devices.length <= MAX_WIRE_DEVICES ? devices : null;
}
