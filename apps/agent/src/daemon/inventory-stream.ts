/**
 * Keeps the server's copy of this host current at the lowest cost: one full snapshot per epoch,
 * then only deltas, and nothing at all while the host does not change (the common case for weeks).
 *
 * Deltas are always taken against the last snapshot the server ACKNOWLEDGED, never against the last
 * one sent: a delta lost with a dropped connection then costs nothing, because the next one still
 * applies to a state the server is known to hold. `epoch` is random per process, so a restarted
 * agent (whose memory of what it sent is gone) can never be mistaken for the old stream.
 */
import { randomUUID } from 'node:crypto';
import {
  type AgentMessage,
  diffSnapshots,
  type HostSnapshot,
  type SnapshotDelta,
} from '@vfio-fleet/core';
import type { Logger } from '../logger';
import type { Clock, TimerHandle } from './clock';
import { overWireLimits } from './wire-limits';

export interface InventorySink {
  /** Whether a bulky message may be sent now (connected, and the send buffer has room). */
  canSendBulk(): boolean;
  send(message: AgentMessage): boolean;
}

export interface InventoryStreamOptions {
  collect: () => Promise<HostSnapshot>;
  sink: InventorySink;
  intervalMs: number;
  clock: Clock;
  logger: Logger;
  epoch?: string;
}

/**
 * Unacked states kept, oldest dropped first. A server acks within one round trip; one that has not
 * acked this many messages will not ack the old ones either, and memory must not grow with it.
 */
const MAX_UNACKED = 32;

interface Sent {
  seq: number;
  snapshot: HostSnapshot;
}

export class InventoryStream {
  readonly epoch: string;
  private seq = 0;
  /** What the server confirmed it holds: every delta is based on it. */
  private acked: Sent | null = null;
  /** Sent and not yet acknowledged, by seq: an ack promotes one of them to `acked`. */
  private readonly unacked = new Map<number, HostSnapshot>();
  /** The newest state the server has been sent (acked or not): "changed?" is judged against it. */
  private lastSent: HostSnapshot | null = null;
  /** The next send must be a full snapshot (new session without resume, resync). */
  private needSnapshot = true;
  private online = false;
  private running = false;
  private timer: TimerHandle | null = null;
  /** The scan in progress, so a trigger during it queues one more rather than a parallel read. */
  private scanning: Promise<void> | null = null;
  private rescanQueued = false;
  /** Why the last inventory was not sent (over the protocol's limits), so it is logged once. */
  private refused: string | null = null;

  constructor(private readonly options: InventoryStreamOptions) {
    this.epoch = options.epoch ?? randomUUID();
  }

  start(): void {
    this.running = true;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    // A scan only reads; waiting for it just keeps it from sending on a closing socket.
    await this.settled();
  }

  /** What hello carries, so a server that still holds our stream can take deltas from there. */
  resumePoint(): { epoch: string; lastAckedSeq: number } | null {
    return this.acked === null ? null : { epoch: this.epoch, lastAckedSeq: this.acked.seq };
  }

  /** A session began: continue from the acked state, or start over with a snapshot. */
  connected(resume: 'ok' | 'snapshot'): void {
    this.online = true;
    this.unacked.clear();
    if (resume === 'ok' && this.acked !== null) {
      // Whatever was sent after the ack may have been lost with the old socket.
      this.lastSent = this.acked.snapshot;
      this.needSnapshot = false;
    } else {
      this.needSnapshot = true;
    }
    this.rescanNow();
  }

  disconnected(): void {
    this.online = false;
  }

  ack(epoch: string, seq: number): void {
    if (epoch !== this.epoch) {
      this.options.logger.warn({ epoch, seq }, 'ack for another epoch ignored');
      return;
    }
    const snapshot = this.unacked.get(seq);
    if (snapshot === undefined) {
      // Already acked, or a seq we never sent: nothing to learn from it.
      this.options.logger.debug({ seq }, 'ack for an unknown seq ignored');
      return;
    }
    this.acked = { seq, snapshot };
    // Acks are cumulative: everything up to seq is applied.
    for (const pending of [...this.unacked.keys()])
      if (pending <= seq) this.unacked.delete(pending);
  }

  resync(reason: string): void {
    this.options.logger.info({ reason }, 'server asked for a resync; sending a full snapshot');
    this.needSnapshot = true;
    this.acked = null;
    this.unacked.clear();
    this.rescanNow();
  }

  /** Resolves once no scan is running or queued (tests, and stop()). */
  async settled(): Promise<void> {
    while (this.scanning !== null) await this.scanning;
  }

  /** Scan as soon as possible (a job changed bindings, a session began). */
  rescanNow(): void {
    if (!this.running) return;
    if (this.scanning !== null) {
      this.rescanQueued = true;
      return;
    }
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    this.runScan();
  }

  private schedule(): void {
    if (!this.running) return;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.runScan();
    }, this.options.intervalMs);
  }

  private runScan(): void {
    this.scanning = this.scanOnce()
      .catch((error: unknown) => {
        this.options.logger.error(
          { err: error },
          'reading the host failed; retrying next interval',
        );
      })
      .finally(() => {
        this.scanning = null;
        if (this.rescanQueued) {
          this.rescanQueued = false;
          this.rescanNow();
        } else {
          this.schedule();
        }
      });
  }

  private async scanOnce(): Promise<void> {
    // Offline, a read would go nowhere: the first scan of the next session sends the current state.
    if (!this.online) return;
    const snapshot = await this.options.collect();
    if (!this.running || !this.online) return;
    if (!this.options.sink.canSendBulk()) {
      // Backpressure: skip this round. The next scan diffs against the acked state again, so
      // whatever changed meanwhile is coalesced into one message instead of piling up.
      this.options.logger.debug('send buffer full; inventory update deferred');
      return;
    }
    if (this.needSnapshot || this.acked === null) {
      if (!this.needSnapshot && this.lastSent !== null && !changed(this.lastSent, snapshot)) {
        return; // a snapshot is in flight, awaiting its ack, and still current
      }
      this.sendSnapshot(snapshot);
      return;
    }
    if (this.lastSent !== null && !changed(this.lastSent, snapshot)) return;
    // Changed since the last send; possibly back to exactly the acked state, which an empty
    // delta expresses (the server may have applied a newer unacked one).
    const delta: SnapshotDelta = diffSnapshots(this.acked.snapshot, snapshot) ?? {
      devicesAdded: [],
      devicesChanged: [],
      devicesRemoved: [],
    };
    const message: AgentMessage = {
      type: 'delta',
      epoch: this.epoch,
      baseSeq: this.acked.seq,
      seq: this.seq + 1,
      delta,
    };
    if (!this.withinLimits(message)) return;
    const seq = this.nextSeq();
    if (this.options.sink.send(message)) {
      this.remember(seq, snapshot);
      this.options.logger.info(
        {
          seq,
          baseSeq: this.acked.seq,
          added: delta.devicesAdded.length,
          changed: delta.devicesChanged.length,
          removed: delta.devicesRemoved.length,
        },
        'inventory delta sent',
      );
    }
  }

  private sendSnapshot(snapshot: HostSnapshot): void {
    const message: AgentMessage = {
      type: 'snapshot',
      epoch: this.epoch,
      seq: this.seq + 1,
      snapshot,
    };
    if (!this.withinLimits(message)) return;
    const seq = this.nextSeq();
    if (this.options.sink.send(message)) {
      this.needSnapshot = false;
      this.remember(seq, snapshot);
      this.options.logger.info(
        { seq, devices: snapshot.devices.length },
        'inventory snapshot sent',
      );
    }
  }

  /**
   * False (and logged once per reason) when `message` is over the protocol's limits: it is not
   * sent, the server keeps what it had, and the next scan tries again (wire-limits.ts).
   */
  private withinLimits(message: AgentMessage): boolean {
    const over = overWireLimits(message);
    if (over !== null && over !== this.refused) {
      this.options.logger.error(
        { over },
        `this host's inventory is not sent: ${over}; the server keeps the last inventory it holds`,
      );
    }
    this.refused = over;
    return over === null;
  }

  private remember(seq: number, snapshot: HostSnapshot): void {
    this.unacked.set(seq, snapshot);
    this.lastSent = snapshot;
    // Map iteration is insertion order, so the first key is the oldest seq.
    for (const oldest of this.unacked.keys()) {
      if (this.unacked.size <= MAX_UNACKED) break;
      this.unacked.delete(oldest);
    }
  }

  private nextSeq(): number {
    this.seq += 1;
    return this.seq;
  }
}

function changed(before: HostSnapshot, after: HostSnapshot): boolean {
  return diffSnapshots(before, after) !== null;
}
