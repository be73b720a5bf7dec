import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ParseError } from '../src/errors';
import { PCI_ADDRESS_PATTERN } from '../src/inventory/schema';
import {
  comparePciAddresses,
  formatPciAddress,
  isPciAddress,
  normalizePciAddress,
  parsePciAddress,
} from '../src/pci/address';

function reasonOf(input: string): string {
  try {
    parsePciAddress(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ParseError);
    if (!(error instanceof ParseError)) throw error;
    expect(error.subject).toBe('PCI address');
    expect(error.input).toBe(input);
    return error.reason;
  }
  throw new Error(`${JSON.stringify(input)} was accepted`);
}

describe('parsePciAddress', () => {
  it('parses the kernel form', () => {
    expect(parsePciAddress('0000:3b:00.1')).toEqual({ domain: 0, bus: 0x3b, device: 0, fn: 1 });
    expect(parsePciAddress('0001:ff:1f.7')).toEqual({ domain: 1, bus: 0xff, device: 0x1f, fn: 7 });
  });

  it('accepts uppercase, surrounding whitespace and the short lspci form', () => {
    expect(normalizePciAddress('0000:3B:00.1')).toBe('0000:3b:00.1');
    expect(normalizePciAddress('  0000:3b:00.1\n')).toBe('0000:3b:00.1');
    expect(normalizePciAddress('3b:00.1')).toBe('0000:3b:00.1');
    expect(normalizePciAddress('3B:1F.7')).toBe('0000:3b:1f.7');
    expect(normalizePciAddress('3:0.0')).toBe('0000:03:00.0');
  });

  it('accepts VMD domains up to 8 hex digits', () => {
    expect(parsePciAddress('10000:e1:00.0').domain).toBe(0x10000);
    expect(normalizePciAddress('10000:E1:00.0')).toBe('10000:e1:00.0');
    expect(normalizePciAddress('ffffffff:00:00.0')).toBe('ffffffff:00:00.0');
  });

  it.each([
    ['', 'it is empty'],
    ['   ', 'it is empty'],
    ['0000:3b:00', 'the ".function" part is missing (expected [domain:]bus:device.function)'],
    ['00.1', 'expected [domain:]bus:device.function, found 0 ":" separators'],
    ['0:0000:3b:00.1', 'expected [domain:]bus:device.function, found 3 ":" separators'],
    ['123456789:00:00.0', 'domain "123456789" has 9 hex digits, at most 8 allowed'],
    ['000g:3b:00.1', 'domain "000g" is not hexadecimal'],
    [':3b:00.1', 'domain is empty'],
    ['0000::00.1', 'bus is empty'],
    ['0000:3bx:00.1', 'bus "3bx" is not hexadecimal'],
    ['0000:13b:00.1', 'bus "13b" has 3 hex digits, at most 2 allowed'],
    ['0000:3b:.1', 'device is empty'],
    ['0000:3b:0z.1', 'device "0z" is not hexadecimal'],
    ['0000:3b:000.1', 'device "000" has 3 hex digits, at most 2 allowed'],
    ['0000:3b:20.0', 'device 0x20 is above 0x1f (a PCI bus has 32 device slots)'],
    ['0000:3b:00.', 'function is empty'],
    ['0000:3b:00.a', 'function "a" must be a single digit 0-7'],
    ['0000:3b:00.10', 'function "10" must be a single digit 0-7'],
    ['0000:3b:00.8', 'function 8 is above 7 (a device has 8 functions)'],
    ['0000:3b:00.-1', 'function "-1" must be a single digit 0-7'],
  ])('rejects %j: %s', (input, reason) => {
    expect(reasonOf(input)).toBe(reason);
    expect(isPciAddress(input)).toBe(false);
  });

  it('puts subject, input and reason in the message', () => {
    expect(() => parsePciAddress('0000:3b:20.0')).toThrow(
      'invalid PCI address "0000:3b:20.0": device 0x20 is above 0x1f',
    );
  });
});

describe('formatPciAddress', () => {
  it('writes %04x:%02x:%02x.%d', () => {
    expect(formatPciAddress({ domain: 0, bus: 1, device: 2, fn: 3 })).toBe('0000:01:02.3');
  });

  it('rejects fields out of range', () => {
    expect(() => formatPciAddress({ domain: 0, bus: 256, device: 0, fn: 0 })).toThrow(RangeError);
    expect(() => formatPciAddress({ domain: 0, bus: 0, device: 32, fn: 0 })).toThrow(RangeError);
    expect(() => formatPciAddress({ domain: 0, bus: 0, device: 0, fn: 8 })).toThrow(RangeError);
    expect(() => formatPciAddress({ domain: -1, bus: 0, device: 0, fn: 0 })).toThrow(RangeError);
    expect(() => formatPciAddress({ domain: 0, bus: 1.5, device: 0, fn: 0 })).toThrow(RangeError);
  });

  it('round-trips every valid address and matches the schema pattern', () => {
    const address = fc.record({
      domain: fc.integer({ min: 0, max: 0xffffffff }),
      bus: fc.integer({ min: 0, max: 0xff }),
      device: fc.integer({ min: 0, max: 0x1f }),
      fn: fc.integer({ min: 0, max: 7 }),
    });
    fc.assert(
      fc.property(address, (a) => {
        const text = formatPciAddress(a);
        expect(PCI_ADDRESS_PATTERN.test(text)).toBe(true);
        expect(parsePciAddress(text)).toEqual(a);
        expect(normalizePciAddress(text.toUpperCase())).toBe(text);
      }),
    );
  });
});

describe('comparePciAddresses', () => {
  it('sorts numerically, not as strings', () => {
    const sorted = [
      '10000:00:00.0',
      '0000:3b:00.1',
      '0000:3b:00.0',
      '0000:0a:1f.0',
      '0001:00:00.0',
      '0000:3b:01.0',
    ].sort(comparePciAddresses);
    expect(sorted).toEqual([
      '0000:0a:1f.0',
      '0000:3b:00.0',
      '0000:3b:00.1',
      '0000:3b:01.0',
      '0001:00:00.0',
      '10000:00:00.0',
    ]);
  });

  it('treats spellings of one address as equal', () => {
    expect(comparePciAddresses('3b:00.1', '0000:3B:00.1')).toBe(0);
  });

  it('never throws, and sorts non-addresses last', () => {
    expect(['zz', '0000:00:00.0', 'aa'].sort(comparePciAddresses)).toEqual([
      '0000:00:00.0',
      'aa',
      'zz',
    ]);
  });
});
