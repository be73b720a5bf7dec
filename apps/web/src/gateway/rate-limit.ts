/**
 * Per-connection rate limits of the gateway (failed hellos per address: hello-guard.ts).
 *
 * - FrameBucket: a token bucket per connection. An honest agent sends a snapshot, then one delta
 *   at a time (each waits for its ack), a ping per heartbeat and a few job frames per job: far
 *   below the refill rate, and its bursts (a job's steps) fit the bucket. A connection that empties
 *   it is not dropped frame by frame (every frame is still handled, in order: a lost delta would
 *   only cost a resync); the gateway stops reading its socket until the debt is refilled, so TCP
 *   pushes back on the sender. One that stays throttled for long is closed.
 * - remoteAddress: the address a connection's failed hellos are counted against.
 */
import type { IncomingMessage } from 'node:http';

export interface FrameLimits {
  /** Frames a connection may send at once (the bucket's size). */
  burst: number;
  /** Frames per second the bucket refills. */
  perSecond: number;
  /** A connection throttled without a break for longer than this is closed (`rate-limited`). */
  maxThrottledMs: number;
}

export const DEFAULT_FRAME_LIMITS: FrameLimits = {
  burst: 60,
  perSecond: 20,
  maxThrottledMs: 30_000,
};

export type TakeResult =
  /** Within the limit. */
  | { kind: 'ok' }
  /**
   * Over it: stop reading for `pauseMs` (never past the stretch's deadline, so the close is not
   * late); `throttledForMs`: how long this stretch has lasted; `started`: this frame began it.
   */
  | { kind: 'throttle'; pauseMs: number; throttledForMs: number; started: boolean }
  /** Throttled without a break for longer than maxThrottledMs. */
  | { kind: 'close'; throttledForMs: number };

/**
 * A token bucket that may go into debt: a frame already received is always counted (and handled),
 * and the debt says how long reading must pause before the sender has earned its next frame.
 *
 * A paused connection sends no frames, so the stretch's length cannot be measured at frame
 * arrivals alone: the frames its TCP buffers held when reading resumed deepen the debt, the next
 * pause grows with it, and the close would wait for the first frame after that pause, long past
 * maxThrottledMs. Pauses therefore end at the deadline at the latest, and the gateway asks
 * overdue() when one ends.
 */
export class FrameBucket {
  private tokens: number;
  private refilledAt: number;
  /** Start of the current throttled stretch; cleared once the bucket is full again. */
  private throttledSince: number | null = null;

  constructor(
    private readonly limits: FrameLimits,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.tokens = limits.burst;
    this.refilledAt = now();
  }

  /** Counts one received frame. */
  take(): TakeResult {
    const now = this.refill();
    this.tokens -= 1;
    if (this.tokens >= 0) return { kind: 'ok' };
    const started = this.throttledSince === null;
    this.throttledSince ??= now;
    const throttledForMs = now - this.throttledSince;
    if (throttledForMs > this.limits.maxThrottledMs) return { kind: 'close', throttledForMs };
    // Until the debt is paid and one more frame is earned, or just past the deadline.
    const pauseMs = Math.min(
      Math.ceil(((1 - this.tokens) / this.limits.perSecond) * 1000),
      Math.floor(this.limits.maxThrottledMs - throttledForMs) + 1,
    );
    return { kind: 'throttle', pauseMs, throttledForMs, started };
  }

  /** How long the current stretch has lasted, when that is longer than maxThrottledMs; else null. */
  overdue(): number | null {
    const now = this.refill();
    if (this.throttledSince === null) return null;
    const throttledForMs = now - this.throttledSince;
    return throttledForMs > this.limits.maxThrottledMs ? throttledForMs : null;
  }

  private refill(): number {
    const now = this.now();
    this.tokens = Math.min(
      this.limits.burst,
      this.tokens + ((now - this.refilledAt) / 1000) * this.limits.perSecond,
    );
    this.refilledAt = now;
    // A full bucket means the sender stayed quiet long enough to earn a whole burst back: whatever
    // it did before is forgiven. A flooder resumed at a zero balance never gets here.
    if (this.tokens >= this.limits.burst) this.throttledSince = null;
    return now;
  }
}

/**
 * The address a request came from. Behind a reverse proxy (VFIO_FLEET_TRUST_PROXY=1) that is the
 * last entry of X-Forwarded-For — the one the proxy appended; entries before it are whatever the
 * client sent and can be forged. Without a trusted proxy the header is ignored entirely.
 */
export function remoteAddress(request: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const header = request.headers['x-forwarded-for'];
    const value = Array.isArray(header) ? header.join(',') : header;
    const last = value
      ?.split(',')
      .map((part) => part.trim())
      .filter((part) => part !== '')
      .at(-1);
    if (last !== undefined) return last;
  }
  return normalizeAddress(request.socket.remoteAddress ?? 'unknown');
}

/** `::ffff:1.2.3.4` (IPv4 on a dual-stack socket) is 1.2.3.4: one address, one budget. */
function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
