/**
 * Reconnect timing. Hundreds of agents lose the server at the same moment (a server restart, a
 * network blip), so every delay is randomised: "full jitter" (AWS architecture blog, Exponential
 * Backoff And Jitter) spreads them uniformly over [0, min(cap, base * 2^attempt)], which keeps the
 * reconnect storm flat instead of synchronised waves. Randomness is injected so tests are exact.
 */

export interface BackoffOptions {
  baseMs: number;
  capMs: number;
  /** Uniform in [0, 1), like Math.random. */
  random: () => number;
}

export const DEFAULT_BACKOFF = { baseMs: 1_000, capMs: 60_000 } as const;

export class Backoff {
  private attempt = 0;

  constructor(private readonly options: BackoffOptions) {}

  /** The delay before the next attempt; each call widens the window until the cap. */
  next(): number {
    // 2^attempt overflows to Infinity long after the cap is reached; Math.min keeps it finite.
    const window = Math.min(this.options.capMs, this.options.baseMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.floor(this.options.random() * window);
  }

  /** After a connection that got as far as `welcome`: the next failure starts small again. */
  reset(): void {
    this.attempt = 0;
  }
}

/**
 * Delay before the very first dial: agents started together (a fleet-wide rollout, a rack power
 * cycle) would otherwise all connect and snapshot in the same second. Bounded by the scan interval
 * so a short-interval agent is not kept waiting longer than one period, and by 10 s in any case.
 */
export function startupSplayMs(intervalMs: number, random: () => number): number {
  return Math.floor(random() * Math.min(intervalMs, 10_000));
}
