/**
 * The devices and capacity pages keep their filters in the URL query string, so a filtered view is
 * a link (the overview's numbers open /devices?status=blocked). These parse the strings a user
 * typed; a bad one gives a message instead of a query the server would refuse.
 */

/** `rack=r1, role=gpu` → { rack: 'r1', role: 'gpu' }; empty → {}. */
export function parseLabels(text: string): { labels: Record<string, string> } | { error: string } {
  const labels: Record<string, string> = {};
  for (const part of text.split(',')) {
    const item = part.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq < 0 ? '' : item.slice(0, eq).trim();
    if (eq < 0 || key === '') return { error: `"${item}" is not key=value` };
    if (key.length > 63) return { error: `label key "${key.slice(0, 20)}…" is too long` };
    labels[key] = item.slice(eq + 1).trim();
  }
  return { labels };
}

/** `15b3:101e` or just the vendor `15b3` → the ids; anything else is an error. */
export function parseType(
  text: string,
): { vendorId?: string; deviceId?: string } | { error: string } {
  const t = text.trim().toLowerCase();
  if (t === '') return {};
  const m = /^([0-9a-f]{4})(?::([0-9a-f]{4})?)?$/.exec(t);
  if (m === null) return { error: `"${text}" is not vendor:device (e.g. 15b3:101e)` };
  return m[2] === undefined ? { vendorId: m[1] } : { vendorId: m[1], deviceId: m[2] };
}

/** The query string without empty values, for router.replace. */
export function queryString(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value.trim() !== '') search.set(key, value.trim());
  }
  const s = search.toString();
  return s === '' ? '' : `?${s}`;
}
