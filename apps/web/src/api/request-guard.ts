/**
 * What every tRPC request must satisfy before any procedure runs (checked in createContext, so a
 * refused request touches nothing and gets tRPC's own error shape):
 *
 * - A batch holds at most MAX_BATCH_CALLS calls (procedures that hash a password refuse any
 *   batch themselves: trpc.ts's `alone`).
 */
import type { IncomingMessage } from 'node:http';
import { TRPCError } from '@trpc/server';
import type { TRPCRequestInfo } from '@trpc/server/http';
import { MAX_BATCH_CALLS } from './limits';

export function guardApiRequest(_req: IncomingMessage, info: TRPCRequestInfo): void {
  if (info.calls.length > MAX_BATCH_CALLS) {
    throw new TRPCError({
      code: 'BAD_REQUEST',
      message: `a batch holds at most ${MAX_BATCH_CALLS} calls; this one has ${info.calls.length}`,
    });
  }
}
