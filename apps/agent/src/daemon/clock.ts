/**
 * Time and chance as injectable dependencies: heartbeats, backoff, splay and the scan interval all
 * read them from here, so a test can drive them exactly instead of sleeping.
 */

export type TimerHandle = ReturnType<typeof setTimeout>;

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

/** Uniform in [0, 1), like Math.random. */
export type Random = () => number;
