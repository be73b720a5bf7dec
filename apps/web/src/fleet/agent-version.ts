/**
 * Agent versions: the one this server ships (apps/agent's package.json, read from the checkout, so
 * the server knows it without the agent being built) and how a host's reported version compares.
 * The comparison is semver's precedence (major.minor.patch, a pre-release sorts before its
 * release, build metadata ignored), with an optional leading `v`; anything else is `unknown`,
 * never guessed at.
 */
import { z } from 'zod';
import agentPackage from '../../../agent/package.json';

export const CURRENT_AGENT_VERSION: string = z
  .object({ version: z.string().min(1) })
  .parse(agentPackage).version;

export type AgentVersionStatus = 'current' | 'outdated' | 'newer' | 'unknown';

interface Parsed {
  core: [number, number, number];
  pre: string[];
}

const VERSION =
  /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$/;

function parseVersion(version: string): Parsed | null {
  const m = VERSION.exec(version.trim());
  if (m === null) return null;
  const core = [Number(m[1]), Number(m[2]), Number(m[3])] as [number, number, number];
  if (!core.every(Number.isSafeInteger)) return null;
  return { core, pre: m[4] === undefined ? [] : m[4].split('.') };
}

function comparePre(a: string[], b: string[]): number {
  // No pre-release outranks any pre-release of the same core version.
  if (a.length === 0 || b.length === 0) return Math.sign(b.length - a.length);
  for (let i = 0; i < Math.max(a.length, b.length); i += 1) {
    const x = a[i];
    const y = b[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const xNum = /^\d+$/.test(x);
    const yNum = /^\d+$/.test(y);
    if (xNum && yNum) {
      const d = Number(x) - Number(y);
      if (d !== 0) return Math.sign(d);
    } else if (xNum !== yNum) {
      return xNum ? -1 : 1;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/** -1, 0 or 1 as `a` is older than, as new as, or newer than `b`; null when either is not a version. */
export function compareVersions(a: string, b: string): -1 | 0 | 1 | null {
  const x = parseVersion(a);
  const y = parseVersion(b);
  if (x === null || y === null) return null;
  for (let i = 0; i < 3; i += 1) {
    const d = (x.core[i] ?? 0) - (y.core[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  const p = comparePre(x.pre, y.pre);
  return p < 0 ? -1 : p > 0 ? 1 : 0;
}

export function agentVersionStatus(
  version: string | null,
  current: string = CURRENT_AGENT_VERSION,
): AgentVersionStatus {
  if (version === null) return 'unknown';
  const order = compareVersions(version, current);
  if (order === null) return 'unknown';
  return order < 0 ? 'outdated' : order > 0 ? 'newer' : 'current';
}
