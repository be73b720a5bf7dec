// Measurement helpers shared by the benches. Every figure is a ratio against a baseline measured
// in the same process, interleaved with ours, so that machine speed, CPU frequency drift and
// noisy neighbours affect both sides alike; absolute rates are reported but are only indicative.

/** A threshold a bench must meet, with what was measured. */
export interface Target {
  name: string;
  measured: number;
  threshold: number;
  unit: string;
  /** `>=`: at least the threshold (rates, ratios); `<=`: at most (latencies, bytes). */
  comparison: '>=' | '<=';
  pass: boolean;
  /** Reported, not judged: the targets are for a fleet on PostgreSQL, not embedded PGlite. */
  informational?: boolean;
}

/** What a bench returns; run.ts writes it to bench/results/<scenario>.json and prints it. */
export interface BenchResult {
  scenario: string;
  description: string;
  quick: boolean;
  /** Headline figures, already rounded for display. */
  metrics: Record<string, number | string>;
  targets: Target[];
  pass: boolean;
  /** Anything else worth keeping (per-repetition samples, inputs). */
  details: Record<string, unknown>;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const hi = sorted[mid] ?? 0;
  return sorted.length % 2 === 1 ? hi : ((sorted[mid - 1] ?? 0) + hi) / 2;
}

/**
 * Runs `pass` (which performs some operations and returns how many) until at least `minMs` have
 * elapsed, and returns operations per second.
 */
export function rate(pass: () => number, minMs: number): number {
  let ops = 0;
  const started = performance.now();
  let elapsed = 0;
  do {
    ops += pass();
    elapsed = performance.now() - started;
  } while (elapsed < minMs);
  return (ops / elapsed) * 1000;
}

export interface Comparison {
  /** Operations per second of each repetition. */
  ours: number[];
  baseline: number[];
  oursMedian: number;
  baselineMedian: number;
  /** Median of the per-repetition ratios ours/baseline (each ratio from adjacent runs). */
  ratio: number;
}

/**
 * Measures ours against the baseline in alternating order (ours first, then baseline first...),
 * after one untimed warm-up of each so that both are JIT-compiled before timing starts.
 */
export function compareInterleaved(options: {
  ours: () => number;
  baseline: () => number;
  repetitions: number;
  minMs: number;
}): Comparison {
  const { ours, baseline, repetitions, minMs } = options;
  rate(ours, minMs / 2);
  rate(baseline, minMs / 2);
  const oursRates: number[] = [];
  const baselineRates: number[] = [];
  const ratios: number[] = [];
  for (let rep = 0; rep < repetitions; rep++) {
    let o: number;
    let b: number;
    if (rep % 2 === 0) {
      o = rate(ours, minMs);
      b = rate(baseline, minMs);
    } else {
      b = rate(baseline, minMs);
      o = rate(ours, minMs);
    }
    oursRates.push(o);
    baselineRates.push(b);
    ratios.push(o / b);
  }
  return {
    ours: oursRates,
    baseline: baselineRates,
    oursMedian: median(oursRates),
    baselineMedian: median(baselineRates),
    ratio: median(ratios),
  };
}

export function target(name: string, measured: number, threshold: number, unit: string): Target {
  return { name, measured, threshold, unit, comparison: '>=', pass: measured >= threshold };
}

/** A ceiling: latencies, memory. NaN (nothing measured) fails. */
export function targetAtMost(
  name: string,
  measured: number,
  threshold: number,
  unit: string,
): Target {
  return { name, measured, threshold, unit, comparison: '<=', pass: measured <= threshold };
}

/** Deterministic PRNG (mulberry32), so a fleet is shuffled the same way on every run. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffle<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const a = out[i];
    const b = out[j];
    if (a !== undefined && b !== undefined) {
      out[i] = b;
      out[j] = a;
    }
  }
  return out;
}
