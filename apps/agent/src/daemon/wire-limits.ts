/**
 * Whether an inventory message is within what the server accepts (docs/protocol.md, "Limits and
 * the worst case"). One that is not is never sent: the server would drop a frame over
 * MAX_SNAPSHOT_MESSAGE_BYTES by closing the connection (1009), and since a welcome resets the
 * reconnect backoff, the agent would redial and resend it about once a second for as long as the
 * host stays that large.
 */
import {
  type AgentMessage,
  encodeMessage,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  MAX_WIRE_DEVICES,
} from '@vfio-fleet/core';

/** Null when `message` may be sent; else what is over, for the log. */
export function overWireLimits(message: AgentMessage): string | null {
  const devices =
    message.type === 'snapshot'
      ? message.snapshot.devices.length
      : message.type === 'delta'
        ? Math.max(
            message.delta.devicesAdded.length,
            message.delta.devicesChanged.length,
            message.delta.devicesRemoved.length,
          )
        : 0;
  if (devices > MAX_WIRE_DEVICES) {
    return `${devices} PCI functions, over the protocol's ${MAX_WIRE_DEVICES} (MAX_WIRE_DEVICES)`;
  }
  if (message.type !== 'snapshot' && message.type !== 'delta') return null;
  const bytes = Buffer.byteLength(encodeMessage(message));
  if (bytes > MAX_SNAPSHOT_MESSAGE_BYTES) {
    return `a ${message.type} of ${bytes} bytes, over the protocol's ${MAX_SNAPSHOT_MESSAGE_BYTES} (MAX_SNAPSHOT_MESSAGE_BYTES)`;
  }
  return null;
}
