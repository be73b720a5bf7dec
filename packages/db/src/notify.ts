/**
 * PostgreSQL LISTEN/NOTIFY on either driver: how server processes sharing one database tell each
 * other "look now" (a job was queued for a host whose agent another process holds, a cancel was
 * requested) instead of waiting for their next poll.
 *
 * A notification is only a hint: it is lost when no process listens, when a listening connection
 * is down, or when the sending transaction rolls back. Whoever reacts to one must re-read the
 * database, and must also poll now and then so a lost hint only delays work.
 */
import type { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import type { Sql } from 'postgres';
import type { Database } from './client';

/** Stops listening; resolves once the LISTEN is gone (idempotent). */
export type Unlisten = () => Promise<void>;

/** Subscribes `onPayload` to `channel`; resolves once the LISTEN is in effect. */
export type Listen = (channel: string, onPayload: (payload: string) => void) => Promise<Unlisten>;

/**
 * Channel names are SQL identifiers (LISTEN takes no bind parameter). Only plain lowercase ones
 * are accepted, so the name is the same whether a driver quotes it or not.
 */
const CHANNEL_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7999;

export function assertChannel(channel: string): void {
  if (!CHANNEL_PATTERN.test(channel)) {
    throw new Error(
      `invalid notification channel ${JSON.stringify(channel)}: lowercase letters, digits and _ (at most 63)`,
    );
  }
}

/**
 * Sends `payload` on `channel` through `db`. Inside a transaction it is delivered at commit (and
 * never when it rolls back), so a listener never hears of a row it cannot read yet.
 */
export async function notify(db: Database, channel: string, payload: string): Promise<void> {
  assertChannel(channel);
  if (Buffer.byteLength(payload, 'utf8') > MAX_NOTIFY_PAYLOAD_BYTES) {
    throw new Error(`notification payload over ${MAX_NOTIFY_PAYLOAD_BYTES} bytes on ${channel}`);
  }
  await db.execute(sql`select pg_notify(${channel}, ${payload})`);
}

/**
 * postgres.js keeps LISTEN on a connection of its own, outside the pool, and re-issues it after a
 * reconnect; notifications sent while that connection was down are lost (hence the polling).
 */
export function postgresListen(client: Sql): Listen {
  return async (channel, onPayload) => {
    assertChannel(channel);
    const request = await client.listen(channel, onPayload);
    let done: Promise<void> | null = null;
    return () => {
      done ??= request.unlisten();
      return done;
    };
  };
}

/** PGlite is one connection in this process: it delivers notifications after each query. */
export function pgliteListen(client: PGlite): Listen {
  return async (channel, onPayload) => {
    assertChannel(channel);
    const unsubscribe = await client.listen(channel, onPayload);
    let done: Promise<void> | null = null;
    return () => {
      // After close() there is nothing left to unlisten, and PGlite would throw.
      done ??= client.closed ? Promise.resolve() : unsubscribe();
      return done;
    };
  };
}
