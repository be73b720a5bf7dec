/**
 * Finds the modules.alias entries whose pattern matches a modalias without running fnmatch on all
 * ~10,000 PCI aliases of a kernel for every device of every host of a fleet.
 *
 * The index only narrows the search: every candidate it proposes is still checked with fnmatch,
 * so a result is exact as long as the candidates include every entry that can match. That is
 * argued where each bucket is chosen (see `candidateIndices`), and tested against `linearMatch`
 * for arbitrary keys.
 *
 * Two paths:
 * - Canonical. file2alias writes PCI patterns as
 *   `<bus>:v<F8>d<F8>sv<F8>sd<F8>bc<F2>sc<F2>i<F2>[*]`, each field N uppercase hex digits or a
 *   lone `*`, and the kernel writes modaliases in the same shape with every field filled in. A
 *   pattern whose first k fields are literal is filed under that literal text (vendor; vendor and
 *   device; ... down to the subsystem ids, since e.g. aacraid has 267 aliases for one device id
 *   that differ only in subsystem). A canonical key looks up each level by its own first k
 *   fields. The handful of wildcard-vendor patterns go by baseclass, or under the bus alone.
 * - General. Any other key (hand-typed, lowercase, truncated, another bus) and any pattern not of
 *   the canonical shape go through a table of literal pattern prefixes, like kmod's own index:
 *   a pattern can only match keys that start with the text before its first special character.
 */
import { fnmatch } from './fnmatch';
import type { AliasEntry } from './modules-alias';

/** Bus prefixes the canonical path understands; a key or pattern with another one is general. */
const BUS_PREFIXES = ['pci:', 'vfio_pci:'] as const;

const STAR = 0x2a;

/** After the bus prefix: the literal markers and field widths of a PCI modalias, in order. */
const LAYOUT: ReadonlyArray<readonly [marker: string, width: number]> = [
  ['v', 8],
  ['d', 8],
  ['sv', 8],
  ['sd', 8],
  ['bc', 2],
  ['sc', 2],
  ['i', 2],
];
/** Offset, after the bus prefix, where each field's digits end: `v` + 8, then `d` + 8, ... */
const FIELD_END: readonly number[] = LAYOUT.reduce<number[]>((ends, [marker, width]) => {
  ends.push((ends.at(-1) ?? 0) + marker.length + width);
  return ends;
}, []);
/** Offset, after the bus prefix, where each field's digits start. */
const FIELD_START: readonly number[] = LAYOUT.map(([, width], f) => (FIELD_END[f] ?? 0) - width);
/** Offset, after the bus prefix, of the two baseclass digits (`bc` is the fifth field). */
const BASECLASS_AT = (FIELD_END[3] ?? 0) + 'bc'.length;

function isUpperHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46);
}

function busPrefixOf(s: string): string | null {
  for (const prefix of BUS_PREFIXES) if (s.startsWith(prefix)) return prefix;
  return null;
}

/** Per char of a canonical key body: the marker's char code, or HEX where a digit goes. */
const HEX = -1;
const KEY_TEMPLATE: Int16Array = Int16Array.from(
  LAYOUT.flatMap(([marker, width]) => [
    ...Array.from(marker, (ch) => ch.charCodeAt(0)),
    ...new Array<number>(width).fill(HEX),
  ]),
);

/** Bus prefix of a canonical modalias key, or null when the key is not exactly that shape. */
function canonicalKeyBus(key: string): string | null {
  const bus = busPrefixOf(key);
  if (bus === null || key.length !== bus.length + KEY_TEMPLATE.length) return null;
  for (let i = 0, k = bus.length; i < KEY_TEMPLATE.length; i++, k++) {
    const want = KEY_TEMPLATE[i];
    const c = key.charCodeAt(k);
    if (want === HEX ? !isUpperHex(c) : c !== want) return null;
  }
  return bus;
}

/** What the index needs to know about a canonical pattern; null when it is not canonical. */
interface CanonicalPattern {
  bus: string;
  /** How many fields, from the vendor on, are literal before the first `*` field. */
  literalFields: number;
  /** The two baseclass digits, or null for `bc*`. */
  baseclass: string | null;
  /** Each field's literal digits, or null where the field is `*` (see alignedMatch). */
  fields: (string | null)[];
}

function parseCanonicalPattern(pattern: string): CanonicalPattern | null {
  const bus = busPrefixOf(pattern);
  if (bus === null) return null;
  let i = bus.length;
  let literalFields = 0;
  let sawWildcard = false;
  let baseclass: string | null = null;
  const fields: (string | null)[] = [];
  for (const [marker, width] of LAYOUT) {
    if (!pattern.startsWith(marker, i)) return null;
    i += marker.length;
    if (pattern.charCodeAt(i) === STAR) {
      i++;
      sawWildcard = true;
      fields.push(null);
      continue;
    }
    const start = i;
    for (const end = i + width; i < end; i++) if (!isUpperHex(pattern.charCodeAt(i))) return null;
    if (!sawWildcard) literalFields++;
    if (marker === 'bc') baseclass = pattern.slice(start, i);
    fields.push(pattern.slice(start, i));
  }
  // file2alias ends a pattern with `*` after a filled-in interface, to allow future fields.
  if (pattern.charCodeAt(i) === STAR) i++;
  if (i !== pattern.length) return null;
  return { bus, literalFields, baseclass, fields };
}

/**
 * Whether a canonical pattern matches a canonical key of its bus field by field: every literal
 * field equal to the key's digits at the same offset. When it does, fnmatch matches too (each `*`
 * taking exactly its field's digits, and a trailing `*` nothing, is a valid assignment), so the
 * caller may skip fnmatch, which on a pattern of seven `*` (vfio_pci's own
 * `vfio_pci:v*d*sv*sd*bc*sc*i*`, a candidate for every key) is most of a lookup's cost. When it
 * does not, the caller still runs fnmatch: this is a shortcut to a yes, never a no.
 */
function alignedMatch(fields: readonly (string | null)[], key: string, busLength: number): boolean {
  for (let f = 0; f < fields.length; f++) {
    const digits = fields[f];
    if (digits != null && !key.startsWith(digits, busLength + (FIELD_START[f] ?? 0))) return false;
  }
  return true;
}

/** Length of the literal text a pattern starts with: everything before its first `*?[\`. */
function literalPrefixLength(pattern: string): number {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c === STAR || c === 0x3f /* ? */ || c === 0x5b /* [ */ || c === 0x5c /* \ */) return i;
  }
  return pattern.length;
}

/**
 * Entries grouped by their literal prefix, one Map per prefix length. A lookup tries each
 * distinct length once (a handful in practice), so it costs O(lengths) Map hits, not O(entries).
 */
class PrefixTable {
  private readonly tables: { length: number; byPrefix: Map<string, number[]> }[] = [];

  add(index: number, pattern: string): void {
    const length = literalPrefixLength(pattern);
    let table = this.tables.find((t) => t.length === length);
    if (table === undefined) {
      table = { length, byPrefix: new Map() };
      this.tables.push(table);
      this.tables.sort((a, b) => a.length - b.length);
    }
    push(table.byPrefix, pattern.slice(0, length), index);
  }

  get empty(): boolean {
    return this.tables.length === 0;
  }

  /** Appends every entry whose literal prefix is a prefix of `key`; returns how many lists it used. */
  collect(key: string, out: number[]): number {
    let lists = 0;
    for (const { length, byPrefix } of this.tables) {
      if (length > key.length) break;
      const found = byPrefix.get(key.slice(0, length));
      if (found !== undefined) {
        for (const i of found) out.push(i);
        lists++;
      }
    }
    return lists;
  }
}

function push(map: Map<string, number[]>, key: string, value: number): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/** The brute-force baseline: fnmatch every entry. Exact by definition; O(entries) per key. */
export function linearMatch(entries: readonly AliasEntry[], key: string): AliasEntry[] {
  const out: AliasEntry[] = [];
  for (const entry of entries) if (fnmatch(entry.pattern, key)) out.push(entry);
  return out;
}

/**
 * A trie over the fields of canonical patterns: the node reached by the literal digits of fields
 * 1..k holds the patterns whose first k fields are exactly those (and whose next one is `*`). A
 * lookup descends by the key's own fields and stops where no pattern continues, so it costs a
 * Map hit per field that some pattern fixes (usually vendor and device), each on 2-8 digits.
 */
interface FieldNode {
  readonly entries: number[];
  readonly children: Map<string, FieldNode>;
}

function newNode(): FieldNode {
  return { entries: [], children: new Map() };
}

/** Canonical patterns of one bus, bucketed by the fields they fix. */
interface BusBuckets {
  /** Patterns with a literal vendor, by their literal fields (see FieldNode). */
  readonly fields: FieldNode;
  /** `v*` with a literal baseclass, by its two digits. */
  readonly byBaseclass: Map<string, number[]>;
  /** `v*` and `bc*`: a candidate for every key of the bus. */
  readonly any: number[];
}

function appendAll(out: number[], list: readonly number[] | undefined): number {
  if (list === undefined) return 0;
  for (const i of list) out.push(i);
  return 1;
}

export class AliasIndex {
  /** Canonical patterns, by bus prefix (`pci:`, `vfio_pci:`). */
  private readonly buses = new Map<string, BusBuckets>();
  /** Patterns of any other shape, for canonical keys. */
  private readonly irregular = new PrefixTable();
  /** Every pattern, for keys that are not canonical modaliases. */
  private readonly general = new PrefixTable();
  /** By entry index: a canonical pattern's shape (see alignedMatch), or null for any other. */
  private readonly canonical: (CanonicalPattern | null)[] = [];

  private constructor(private readonly entries: readonly AliasEntry[]) {
    entries.forEach((entry, index) => {
      this.general.add(index, entry.pattern);
      const shape = parseCanonicalPattern(entry.pattern);
      this.canonical.push(shape);
      if (shape === null) {
        this.irregular.add(index, entry.pattern);
        return;
      }
      const buckets = this.bucketsOf(shape.bus);
      if (shape.literalFields > 0) {
        let node = buckets.fields;
        const b = shape.bus.length;
        for (let f = 0; f < shape.literalFields; f++) {
          const digits = entry.pattern.slice(b + (FIELD_START[f] ?? 0), b + (FIELD_END[f] ?? 0));
          let child = node.children.get(digits);
          if (child === undefined) {
            child = newNode();
            node.children.set(digits, child);
          }
          node = child;
        }
        node.entries.push(index);
      } else if (shape.baseclass !== null) {
        push(buckets.byBaseclass, shape.baseclass, index);
      } else {
        buckets.any.push(index);
      }
    });
  }

  static build(entries: readonly AliasEntry[]): AliasIndex {
    // A copy, so that a caller reusing its array cannot desynchronize the buckets.
    return new AliasIndex(entries.slice());
  }

  /** Number of entries indexed. */
  get size(): number {
    return this.entries.length;
  }

  /** Every entry whose pattern matches `key` (fnmatch, flags 0), in file order. */
  match(key: string): AliasEntry[] {
    const out: AliasEntry[] = [];
    const bus = canonicalKeyBus(key);
    for (const i of this.candidateIndices(key, bus)) {
      const entry = this.entries[i];
      if (entry === undefined) continue;
      const shape = bus === null ? null : this.canonical[i];
      // Only a pattern of the key's own bus may take the shortcut: alignedMatch compares the
      // fields, not the bus prefix (BUS_PREFIXES' strings, so === compares them).
      if (
        shape != null &&
        bus !== null &&
        shape.bus === bus &&
        alignedMatch(shape.fields, key, bus.length)
      ) {
        out.push(entry);
      } else if (fnmatch(entry.pattern, key)) {
        out.push(entry);
      }
    }
    return out;
  }

  /**
   * The entries `match` runs fnmatch on for `key`, in file order: a superset of the result. Public
   * so that tests and the benchmark can show how little of the file a lookup touches.
   */
  candidatesFor(key: string): AliasEntry[] {
    const out: AliasEntry[] = [];
    for (const i of this.candidateIndices(key, canonicalKeyBus(key))) {
      const entry = this.entries[i];
      if (entry !== undefined) out.push(entry);
    }
    return out;
  }

  private bucketsOf(bus: string): BusBuckets {
    let buckets = this.buses.get(bus);
    if (buckets === undefined) {
      buckets = { fields: newNode(), byBaseclass: new Map(), any: [] };
      this.buses.set(bus, buckets);
    }
    return buckets;
  }

  private candidateIndices(key: string, bus: string | null): number[] {
    const out: number[] = [];
    let lists = 0;
    if (bus === null) {
      lists = this.general.collect(key, out);
    } else {
      // Why these buckets hold every canonical pattern that can match this key:
      // - a pattern whose first k fields are literal starts with that literal text, so the key
      //   must start with it too, and in a canonical key that text is its own first k fields
      //   (markers sit at fixed offsets, so equal text is equal digits field by field);
      // - a `v*` pattern with a literal baseclass contains `bc` followed by those two digits; a
      //   canonical key contains `bc` exactly once (hex digits are uppercase, markers lowercase),
      //   so a match must align them and the digits must be the key's baseclass;
      // - patterns of another bus differ in their literal prefix, so they cannot match.
      // Patterns not of canonical shape are not in these buckets and come from `irregular`.
      const buckets = this.buses.get(bus);
      if (buckets !== undefined) {
        const b = bus.length;
        let node = buckets.fields;
        for (let f = 0; f < LAYOUT.length; f++) {
          const child = node.children.get(
            key.slice(b + (FIELD_START[f] ?? 0), b + (FIELD_END[f] ?? 0)),
          );
          if (child === undefined) break;
          if (child.entries.length > 0) lists += appendAll(out, child.entries);
          node = child;
        }
        lists += appendAll(
          out,
          buckets.byBaseclass.get(key.slice(b + BASECLASS_AT, b + BASECLASS_AT + 2)),
        );
        if (buckets.any.length > 0) lists += appendAll(out, buckets.any);
      }
      if (!this.irregular.empty) lists += this.irregular.collect(key, out);
    }
    // Each list is in file order already; only a merge of several needs sorting.
    if (lists > 1) out.sort((a, b) => a - b);
    return out;
  }
}
