// Helpers of the diagnostic profiles (scenarios/*-profile.ts): medians of one step, timed alone.
import type { DeviceFacts, HostSnapshot } from '@vfio-fleet/core';
import { median } from './measure';

/** Median milliseconds of `fn` over `reps` runs, after one warm-up run. */
export function timeIt(reps: number, fn: () => void): number {
  fn();
  const samples: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    fn();
    samples.push(performance.now() - t);
  }
  return Number(median(samples).toFixed(2));
}

/** Milliseconds of one awaited call. */
export async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/** The snapshot's facts: its devices without the agent's readiness, as the server assesses them. */
export function factsOf(
  s: HostSnapshot,
): Omit<HostSnapshot, 'devices'> & { devices: DeviceFacts[] } {
  return { ...s, devices: s.devices.map(({ readiness: _r, ...facts }): DeviceFacts => facts) };
}
