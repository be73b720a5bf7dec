/**
 * Bounds on what one readiness reason says. Every member of an IOMMU group carries the group's
 * reasons, and a group can hold a whole host: a reason that named every other member made a
 * host's reasons grow with the square of its largest group (512 endpoints in one group cost the
 * server 2 GB). So a reason names a few devices and counts the rest (the group's member list
 * lives once, on the group), and its text and `related` list have a hard cap whatever the input.
 */

/** Devices a reason names in its text; the rest are counted (`and 508 more`). */
export const MAX_NAMED_DEVICES = 4;
/** Addresses in one reason's `related` list. */
export const MAX_RELATED_DEVICES = 8;
/** Characters of one reason's message, and of its remedy (well under the wire's 4096 and a plan's 2000). */
export const MAX_REASON_TEXT = 1000;
/**
 * Characters of one peer-supplied string quoted in a reason (a device name, a path, a cmdline
 * value): a host-wide string is quoted in every device's reasons, so it must stay short there.
 */
export const MAX_QUOTED_TEXT = 120;

/** `a`, `a and b`, `a, b and c`. */
export function list(items: readonly string[]): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/**
 * The first MAX_NAMED_DEVICES of `shown` named, and the rest of `total` counted:
 * `a, b, c, d and 508 more`. `shown` needs only its first MAX_NAMED_DEVICES items.
 */
export function fewOf(shown: readonly string[], total: number = shown.length): string {
  const named = shown.slice(0, MAX_NAMED_DEVICES);
  const rest = total - named.length;
  return rest <= 0 ? list(named) : `${named.join(', ')} and ${rest} more`;
}

/** `text`, cut to `max` characters with an ellipsis. */
export function clip(text: string, max: number = MAX_REASON_TEXT): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** A peer-supplied string as a reason quotes it. */
export function quote(text: string): string {
  return clip(text, MAX_QUOTED_TEXT);
}

/** At most `count` items of `items` other than `self`, in order, without walking the rest. */
export function firstOthers<T extends { address: string }>(
  items: readonly T[],
  self: string,
  count: number = MAX_NAMED_DEVICES,
): T[] {
  const out: T[] = [];
  for (const item of items) {
    if (out.length >= count) break;
    if (item.address !== self) out.push(item);
  }
  return out;
}
