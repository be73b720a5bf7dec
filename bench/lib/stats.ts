// Percentiles and small summaries for the load benches (nearest-rank, as latency SLOs state them).
import { readdirSync, readFileSync } from 'node:fs';

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

/**
 * CPU seconds of this machine's PostgreSQL processes so far, by role read from their process
 * titles ("backends" for client connections, else "walwriter", "checkpointer", "autovacuum
 * worker"...); empty when none can be read (PostgreSQL on another machine, or /proc closed).
 */
export function postgresCpuSeconds(): Map<string, number> {
  const byRole = new Map<string, number>();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return byRole;
  }
  for (const pid of pids) {
    try {
      if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('postgres')) continue;
      const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      // "postgres: 15/main: root vf_bench_x 127.0.0.1(5678) idle" is a client's backend.
      const role = /\(\d+\)/.test(title)
        ? 'backends'
        : (/postgres: [^:]+: ([a-z ]+)/.exec(title)?.[1]?.trim() ?? 'postmaster');
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime, in clock ticks (USER_HZ, 100 on Linux).
      const seconds = (Number(fields[11]) + Number(fields[12])) / 100;
      byRole.set(role, (byRole.get(role) ?? 0) + seconds);
    } catch {
      // It exited meanwhile: its time is lost to the reading (short-lived autovacuum workers).
    }
  }
  return byRole;
}

/** PostgreSQL's CPU over wall time since `mark` (1.0 = one core busy); null when unreadable. */
export function postgresCpuShareSince(mark: {
  cpu: Map<string, number>;
  at: number;
}): number | null {
  const now = postgresCpuSeconds();
  if (now.size === 0) return null;
  let spent = 0;
  for (const [role, seconds] of now) spent += Math.max(0, seconds - (mark.cpu.get(role) ?? 0));
  return (spent * 1000) / Math.max(1, performance.now() - mark.at);
}

export function postgresCpuMark(): { cpu: Map<string, number>; at: number } {
  return { cpu: postgresCpuSeconds(), at: performance.now() };
}
