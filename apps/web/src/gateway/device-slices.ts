/**
 * A large host's devices written in slices. One statement carries its devices as one jsonb
 * document, which the driver encodes in one go: for a host at the protocol's limit (4,096 devices,
 * up to 14 MB with the server's readiness) that held the event loop for most of a second per
 * snapshot, on top of parsing and assessing it. Slices of DEVICES_PER_STATEMENT keep each such
 * step short, with the event loop free between them; a host of up to that many devices (every
 * real one but the largest) is still one statement, so nothing changes for it.
 */
import type { Device } from '@vfio-fleet/core';
import { bulkUpsertDevices, type Database, type UpsertResult } from '@vfio-fleet/db';
import { yieldToEventLoop } from '../ops/yield';

export const DEVICES_PER_STATEMENT = 256;

export async function upsertDevicesInSlices(
  tx: Database,
  hostId: string,
  items: readonly Device[],
): Promise<UpsertResult> {
  if (items.length <= DEVICES_PER_STATEMENT) return bulkUpsertDevices(tx, hostId, items);
  const total: UpsertResult = { written: 0, writtenAddresses: [], statements: 0 };
  for (let start = 0; start < items.length; start += DEVICES_PER_STATEMENT) {
    if (start > 0) await yieldToEventLoop();
    const slice = await bulkUpsertDevices(
      tx,
      hostId,
      items.slice(start, start + DEVICES_PER_STATEMENT),
    );
    total.written += slice.written;
    total.writtenAddresses.push(...slice.writtenAddresses);
    total.statements += slice.statements;
  }
  return total;
}
