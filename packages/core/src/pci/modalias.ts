/**
 * The PCI modalias the kernel writes to /sys/bus/pci/devices/<addr>/modalias:
 * `pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X` (drivers/pci/pci-sysfs.c). It is the key matched
 * against modules.alias patterns, and those patterns are uppercase, so a lowercase or reformatted
 * modalias would silently match nothing. The parser is therefore strict: anything the kernel would
 * not have written is rejected with a reason, never "fixed".
 */
import { ParseError } from '../errors';

export interface PciModalias {
  vendor: number;
  device: number;
  subvendor: number;
  subdevice: number;
  baseClass: number;
  subClass: number;
  progIf: number;
}

const SUBJECT = 'modalias';
const PREFIX = 'pci:';

interface FieldSpec {
  tag: string;
  key: keyof PciModalias;
  label: string;
  width: number;
}

/** In the kernel's order; the tags are lowercase and the values uppercase, which keeps them apart. */
const FIELDS: readonly FieldSpec[] = [
  { tag: 'v', key: 'vendor', label: 'vendor ID', width: 8 },
  { tag: 'd', key: 'device', label: 'device ID', width: 8 },
  { tag: 'sv', key: 'subvendor', label: 'subsystem vendor ID', width: 8 },
  { tag: 'sd', key: 'subdevice', label: 'subsystem device ID', width: 8 },
  { tag: 'bc', key: 'baseClass', label: 'base class', width: 2 },
  { tag: 'sc', key: 'subClass', label: 'subclass', width: 2 },
  { tag: 'i', key: 'progIf', label: 'programming interface', width: 2 },
];

const ORDER = FIELDS.map((f) => f.tag).join(', ');

/** The 16-bit config space registers are printed with %08X, so their upper half is always zero. */
const SIXTEEN_BIT: ReadonlySet<keyof PciModalias> = new Set([
  'vendor',
  'device',
  'subvendor',
  'subdevice',
]);

function isUpperHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46);
}

function isAnyHex(c: number): boolean {
  return isUpperHex(c) || (c >= 0x61 && c <= 0x66);
}

function isLowerLetter(c: number): boolean {
  return c >= 0x61 && c <= 0x7a;
}

/** The lowercase letters starting at `pos`: a field tag, since kernel values are uppercase. */
function tagAt(text: string, pos: number): string {
  let end = pos;
  while (end < text.length && isLowerLetter(text.charCodeAt(end))) end++;
  return text.slice(pos, end);
}

/** The tags present from `pos` on, to tell a missing field from one in the wrong place. */
function tagsFrom(text: string, pos: number): string[] {
  return text.slice(pos).match(/[a-z]+/g) ?? [];
}

function tagProblem(text: string, pos: number, field: FieldSpec): string {
  const found = tagAt(text, pos);
  const where = `at offset ${pos}`;
  if (pos >= text.length) return `field "${field.tag}" (${field.label}) is missing at the end`;
  if (tagsFrom(text, pos).includes(field.tag)) {
    return `field "${field.tag}" (${field.label}) is out of place: expected it ${where}, found ${JSON.stringify(text.slice(pos, pos + 4))}; fields must come in the order ${ORDER}`;
  }
  if (found.length > 0) {
    return `field "${field.tag}" (${field.label}) is missing: found "${found}" ${where} instead; fields must come in the order ${ORDER}`;
  }
  return `field "${field.tag}" (${field.label}) is missing: found ${JSON.stringify(text.slice(pos, pos + 4))} ${where}`;
}

function valueProblem(text: string, pos: number, field: FieldSpec, nextTag: string | null): string {
  const what = `field "${field.tag}" (${field.label})`;
  // Lowercase hex is the likeliest damage (a value copied from lspci -n): if exactly `width`
  // case-insensitive hex digits are followed by the next field, call it that, not a width error.
  const span = text.slice(pos, pos + field.width);
  let allHex = span.length === field.width;
  for (let i = 0; allHex && i < span.length; i++) allHex = isAnyHex(span.charCodeAt(i));
  const after = pos + field.width;
  const endsRight = nextTag === null ? after === text.length : text.startsWith(nextTag, after);
  if (allHex && endsRight && span !== span.toUpperCase()) {
    return `${what} ${JSON.stringify(span)} has lowercase hex; the kernel writes uppercase (${span.toUpperCase()})`;
  }
  let end = pos;
  while (end < text.length && isUpperHex(text.charCodeAt(end))) end++;
  const digits = end - pos;
  if (digits === 0) {
    return `${what} has no hex digits: expected ${field.width} uppercase hex digits at offset ${pos}, found ${JSON.stringify(text.slice(pos, pos + 4))}`;
  }
  return `${what} ${JSON.stringify(text.slice(pos, end))} has ${digits} hex digit${digits === 1 ? '' : 's'}, expected exactly ${field.width}`;
}

function tryParse(text: string): PciModalias | string {
  if (!text.startsWith(PREFIX)) {
    return `must start with "${PREFIX}", found ${JSON.stringify(text.slice(0, PREFIX.length))}`;
  }
  const out: PciModalias = {
    vendor: 0,
    device: 0,
    subvendor: 0,
    subdevice: 0,
    baseClass: 0,
    subClass: 0,
    progIf: 0,
  };
  let pos = PREFIX.length;
  for (let f = 0; f < FIELDS.length; f++) {
    const field = FIELDS[f];
    if (field === undefined) break;
    if (!text.startsWith(field.tag, pos)) return tagProblem(text, pos, field);
    pos += field.tag.length;
    const nextTag = FIELDS[f + 1]?.tag ?? null;
    const value = text.slice(pos, pos + field.width);
    let ok = value.length === field.width;
    for (let i = 0; ok && i < value.length; i++) ok = isUpperHex(value.charCodeAt(i));
    // An uppercase digit right after the field means it is too wide; anything else there is
    // judged as the next field's tag (or trailing junk) by the next step.
    if (ok && pos + field.width < text.length && isUpperHex(text.charCodeAt(pos + field.width))) {
      ok = false;
    }
    if (!ok) return valueProblem(text, pos, field, nextTag);
    const n = Number.parseInt(value, 16);
    if (SIXTEEN_BIT.has(field.key) && n > 0xffff) {
      return `field "${field.tag}" (${field.label}) ${value} does not fit the 16-bit register it comes from`;
    }
    out[field.key] = n;
    pos += field.width;
  }
  if (pos < text.length) {
    return `trailing junk after the last field: ${JSON.stringify(text.slice(pos, pos + 16))}`;
  }
  return out;
}

/**
 * Parses a sysfs modalias. A trailing newline (sysfs files end in one) and trailing blanks are
 * dropped; anything else the kernel would not have written throws ParseError('modalias', ...).
 */
export function parsePciModalias(input: string): PciModalias {
  const result = tryParse(input.trimEnd());
  if (typeof result === 'string') throw new ParseError(SUBJECT, input, result);
  return result;
}

export function isPciModalias(input: string): boolean {
  return typeof tryParse(input.trimEnd()) !== 'string';
}

function hexUpper(n: number, width: number): string {
  return n.toString(16).toUpperCase().padStart(width, '0');
}

function checkField(field: FieldSpec, n: number): void {
  const max = SIXTEEN_BIT.has(field.key) ? 0xffff : 0xff;
  if (!Number.isInteger(n) || n < 0 || n > max) {
    throw new RangeError(`modalias ${field.label} out of range: ${n}`);
  }
}

/** Writes the modalias exactly as the kernel does, so it matches modules.alias patterns. */
export function formatPciModalias(m: PciModalias): string {
  let out = PREFIX;
  for (const field of FIELDS) {
    checkField(field, m[field.key]);
    out += field.tag + hexUpper(m[field.key], field.width);
  }
  return out;
}

/** 4 lowercase hex digits, as sysfs `vendor`/`device` files and the inventory schema spell IDs. */
export function hex4(n: number): string {
  return n.toString(16).padStart(4, '0');
}

/** 2 lowercase hex digits (a class byte, a revision). */
export function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** The 6 lowercase hex digits of the class register (base class, subclass, prog-if). */
export function modaliasClassCode(m: PciModalias): string {
  return hex2(m.baseClass) + hex2(m.subClass) + hex2(m.progIf);
}
