// Percentiles and small summaries for the load benches (nearest-rank, as latency SLOs state them).

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

export interface LatencySummary {
  count: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export function summarize(values: readonly number[]): LatencySummary {
  return {
    count: values.length,
    p50: round(percentile(values, 50)),
    p95: round(percentile(values, 95)),
    p99: round(percentile(values, 99)),
    max: round(values.length === 0 ? Number.NaN : Math.max(...values)),
  };
}

export function round(value: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every `everyMs` until it is true or `timeoutMs` passed; returns whether it held. */
export async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 100,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (performance.now() > deadline) return false;
    await sleep(everyMs);
  }
}

/** CPU time of this process over wall time since `mark` (1.0 = one core busy). */
export function cpuShareSince(mark: { cpu: NodeJS.CpuUsage; at: number }): number {
  const used = process.cpuUsage(mark.cpu);
  return (used.user + used.system) / 1000 / Math.max(1, performance.now() - mark.at);
}

export function cpuMark(): { cpu: NodeJS.CpuUsage; at: number } {
  return { cpu: process.cpuUsage(), at: performance.now() };
}
