/**
 * An in-process sliding-window limiter: at most `limit` events per key within `windowMs`.
 *
 * Login uses it for failed attempts per IP and per username. It is per process on purpose: with N
 * server processes an attacker gets at most N × limit guesses per window, still far too few for a
 * scrypt-hashed password of 12+ characters, and no database write is spent per failed guess.
 */
export interface RateLimitOptions {
  limit: number;
  windowMs: number;
  /** Keys tracked at most; the oldest are forgotten first (a flood of random usernames). */
  maxKeys?: number;
  now?: () => number;
}

export interface RateLimitVerdict {
  allowed: boolean;
  /** Seconds until one more event is allowed (0 when allowed now). */
  retryAfterSeconds: number;
}

/** reserve()'s answer: allowed and counted (`cancel` takes the event back), or refused. */
export type Reservation =
  | { allowed: true; cancel: () => void }
  | { allowed: false; retryAfterSeconds: number };

export class SlidingWindowLimiter {
  private readonly events = new Map<string, number[]>();
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(options: RateLimitOptions) {
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.maxKeys = options.maxKeys ?? 100_000;
    this.now = options.now ?? Date.now;
  }

  private recent(key: string, now: number): number[] {
    const times = this.events.get(key);
    if (times === undefined) return [];
    const kept = times.filter((t) => t > now - this.windowMs);
    if (kept.length === 0) this.events.delete(key);
    else this.events.set(key, kept);
    return kept;
  }

  check(key: string): RateLimitVerdict {
    const now = this.now();
    const times = this.recent(key, now);
    if (times.length < this.limit) return { allowed: true, retryAfterSeconds: 0 };
    // The window reopens when the oldest event still counted falls out of it.
    const oldest = times[times.length - this.limit] ?? now;
    return {
      allowed: false,
      retryAfterSeconds: Math.max(1, Math.ceil((oldest + this.windowMs - now) / 1000)),
    };
  }

  /**
   * check() and hit() as one step: the event is counted now, when allowed. Checking before a slow
   * operation and counting after it lets every concurrent caller pass the check first.
   */
  reserve(key: string): Reservation {
    const verdict = this.check(key);
    if (!verdict.allowed) return { allowed: false, retryAfterSeconds: verdict.retryAfterSeconds };
    const at = this.record(key);
    let cancelled = false;
    return {
      allowed: true,
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        // Gone already when the key was reset or fell out of the window: nothing to take back.
        const times = this.events.get(key);
        const index = times?.indexOf(at) ?? -1;
        if (times === undefined || index < 0) return;
        times.splice(index, 1);
        if (times.length === 0) this.events.delete(key);
      },
    };
  }

  hit(key: string): void {
    this.record(key);
  }

  private record(key: string): number {
    const now = this.now();
    const times = this.recent(key, now);
    times.push(now);
    // Re-inserting moves the key to the end of the Map's order, so the first key is the stalest.
    this.events.delete(key);
    this.events.set(key, times);
    while (this.events.size > this.maxKeys) {
      const stalest = this.events.keys().next();
      if (stalest.done === true) break;
      this.events.delete(stalest.value);
    }
    return now;
  }

  reset(key: string): void {
    this.events.delete(key);
  }
}
