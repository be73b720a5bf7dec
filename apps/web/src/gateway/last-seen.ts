/**
 * Hosts' last_seen_at, written for many hosts in one statement. Each connection asks for a write
 * at most once per its interval (see AgentGateway.touch), but 5,000 agents pinging every 10 s still
 * ask 500 times a second, and one UPDATE with its own transaction per ask was most of what the
 * database did for a fleet at rest. Collected here for a fraction of a second, they become one
 * UPDATE of every host heard from, which also reads each one's credential: a revocation made
 * through another server process (which cannot reach the socket) closes it at the next write.
 */
import { type Database, hosts, textArrayLiteral } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';

/** What the writer tells the connection that asked, once its host's row was written (or not). */
export interface SeenCallbacks {
  /** The credential was revoked meanwhile, or the host row is gone: close the connection. */
  revoked(): void;
  /** The write failed (the database is down): ask again at the next message. */
  failed(): void;
}

export class LastSeenWriter {
  private pending = new Map<string, SeenCallbacks>();
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly now: () => Date,
    private readonly onError: (error: unknown, hosts: number) => void,
    /** How long an ask waits for others to join it. */
    private readonly delayMs: number,
  ) {}

  /** Writes the host's last_seen_at (and state online) within delayMs. */
  mark(hostId: string, callbacks: SeenCallbacks): void {
    this.pending.set(hostId, callbacks);
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flush();
      }, this.delayMs);
      this.timer.unref();
    }
  }

  /** Writes what is pending now (after a flush already running); never rejects. */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.pending;
    this.pending = new Map();
    this.flushing = this.flushing.then(() => (batch.size === 0 ? undefined : this.write(batch)));
    return this.flushing;
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending.clear();
  }

  private async write(batch: ReadonlyMap<string, SeenCallbacks>): Promise<void> {
    const ids = [...batch.keys()].sort();
    try {
      // Rows locked in id order (the subquery's FOR UPDATE), so that two writers, here or in
      // another server process, never wait on each other in a cycle.
      const rows = await this.db
        .update(hosts)
        .set({ lastSeenAt: this.now(), state: 'online' })
        .where(
          sql`${hosts.id} IN (SELECT id FROM hosts WHERE id = ANY(${textArrayLiteral(ids)}::uuid[])
                               ORDER BY id FOR UPDATE)`,
        )
        .returning({
          id: hosts.id,
          // Spelled out with the tables named: drizzle writes columns in RETURNING unqualified, and
          // an unqualified "agent_id" inside the subquery is the credential's own, so every host
          // read as revoked as soon as any one credential of the fleet was.
          revoked: sql<boolean>`exists (select 1 from agent_credentials c
            where c.agent_id = "hosts"."agent_id" and c.revoked_at is not null)`,
        });
      const written = new Set<string>();
      for (const row of rows) {
        written.add(row.id);
        if (row.revoked) batch.get(row.id)?.revoked();
      }
      for (const [id, callbacks] of batch) if (!written.has(id)) callbacks.revoked();
    } catch (error) {
      this.onError(error, batch.size);
      for (const callbacks of batch.values()) callbacks.failed();
    }
  }
}
