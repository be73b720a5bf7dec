/**
 * PCI addresses (`domain:bus:device.function`). The kernel names devices `%04x:%02x:%02x.%d`, but
 * operators type what lspci prints (`3b:00.1`, no domain) or paste uppercase from BIOS screens, so
 * input is accepted in those forms and always normalized to the kernel's, which is what sysfs
 * paths, IOMMU group listings and the inventory schema use.
 */
import { ParseError } from '../errors';

export interface PciAddress {
  /** PCI segment; above 0xffff only for synthetic domains such as Intel VMD's (e.g. 0x10000). */
  domain: number;
  bus: number;
  /** Slot, 0..0x1f (5 bits in the routing ID). */
  device: number;
  /** Function, 0..7 (3 bits; ARI widens it on the wire, but Linux still names it device.fn). */
  fn: number;
}

const SUBJECT = 'PCI address';
/** Linux prints domains with %04x into an int-sized field; VMD domains are 5 digits, 8 is the ceiling. */
const MAX_DOMAIN_DIGITS = 8;
const MAX_DEVICE = 0x1f;
const MAX_FUNCTION = 7;

function isHex(text: string): boolean {
  return /^[0-9a-f]+$/i.test(text);
}

/**
 * Parses one hex field, or returns why it cannot be parsed. Short fields (`3b:0.1`) are accepted
 * because lspci accepts them, but a field wider than its kernel width is a typo, not a big number.
 */
function hexField(name: string, text: string, maxDigits: number): number | string {
  if (text.length === 0) return `${name} is empty`;
  if (!isHex(text)) return `${name} ${JSON.stringify(text)} is not hexadecimal`;
  if (text.length > maxDigits) {
    return `${name} ${JSON.stringify(text)} has ${text.length} hex digits, at most ${maxDigits} allowed`;
  }
  return Number.parseInt(text, 16);
}

/** Parses without throwing: the address, or the reason it is not one. */
function tryParse(input: string): PciAddress | string {
  const text = input.trim();
  if (text.length === 0) return 'it is empty';
  const dot = text.lastIndexOf('.');
  if (dot < 0) return 'the ".function" part is missing (expected [domain:]bus:device.function)';
  const fnText = text.slice(dot + 1);
  const parts = text.slice(0, dot).split(':');
  if (parts.length < 2 || parts.length > 3) {
    return `expected [domain:]bus:device.function, found ${parts.length - 1} ":" separator${parts.length === 2 ? '' : 's'}`;
  }
  const [domainText, busText, deviceText] = parts.length === 3 ? parts : ['0', ...parts];

  const domain = hexField('domain', domainText ?? '', MAX_DOMAIN_DIGITS);
  if (typeof domain === 'string') return domain;
  const bus = hexField('bus', busText ?? '', 2);
  if (typeof bus === 'string') return bus;
  const device = hexField('device', deviceText ?? '', 2);
  if (typeof device === 'string') return device;
  if (device > MAX_DEVICE) {
    return `device 0x${device.toString(16)} is above 0x1f (a PCI bus has 32 device slots)`;
  }
  if (fnText.length === 0) return 'function is empty';
  if (!/^[0-9]$/.test(fnText)) {
    return `function ${JSON.stringify(fnText)} must be a single digit 0-7`;
  }
  const fn = Number(fnText);
  if (fn > MAX_FUNCTION) return `function ${fn} is above 7 (a device has 8 functions)`;
  return { domain, bus, device, fn };
}

/**
 * Parses `0000:3b:00.1`, `3b:00.1` (domain 0), any case, surrounding blanks.
 * Throws ParseError('PCI address', input, reason) naming the offending field.
 */
export function parsePciAddress(input: string): PciAddress {
  const result = tryParse(input);
  if (typeof result === 'string') throw new ParseError(SUBJECT, input, result);
  return result;
}

function inRange(value: number, max: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= max;
}

/** The kernel's `%04x:%02x:%02x.%d`. Throws RangeError for fields no parser could have produced. */
export function formatPciAddress(a: PciAddress): string {
  if (
    !inRange(a.domain, 0xffffffff) ||
    !inRange(a.bus, 0xff) ||
    !inRange(a.device, MAX_DEVICE) ||
    !inRange(a.fn, MAX_FUNCTION)
  ) {
    throw new RangeError(`PCI address fields out of range: ${JSON.stringify(a)}`);
  }
  const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
  return `${hex(a.domain, 4)}:${hex(a.bus, 2)}:${hex(a.device, 2)}.${a.fn}`;
}

/** Any accepted spelling → the kernel's canonical one. Throws ParseError like parsePciAddress. */
export function normalizePciAddress(input: string): string {
  return formatPciAddress(parsePciAddress(input));
}

export function isPciAddress(input: string): boolean {
  return typeof tryParse(input) !== 'string';
}

/**
 * Numeric order (domain, bus, device, function), for sorting: string order would put domain
 * 0x10000 before 0x2000. Usable as an Array#sort comparator on unvalidated input, so it never
 * throws: anything that is not an address sorts after every address, in string order.
 */
export function comparePciAddresses(a: string, b: string): number {
  const pa = tryParse(a);
  const pb = tryParse(b);
  if (typeof pa === 'string' || typeof pb === 'string') {
    if (typeof pa !== 'string') return -1;
    if (typeof pb !== 'string') return 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return pa.domain - pb.domain || pa.bus - pb.bus || pa.device - pb.device || pa.fn - pb.fn;
}
