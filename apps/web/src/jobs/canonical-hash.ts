/**
 * A stable hash of JSON data: object keys sorted at every level, so two equal values hash the same
 * however they were built (a plan computed in another process, a jsonb round trip). Preview hashes
 * are compared across requests: "create what I previewed, or tell me it changed".
 */
import { createHash } from 'node:crypto';

/** JSON with sorted keys; `undefined` members are dropped as JSON.stringify drops them. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value === 'object' && value !== null) {
    const sorted: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      sorted[key] = sortKeys((value as Record<string, unknown>)[key]);
    }
    return sorted;
  }
  return value;
}

/** sha256 of the canonical JSON, hex. */
export function canonicalHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex');
}
