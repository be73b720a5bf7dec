import { readTestdata } from '@vfio-fleet/testdata';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ParseError } from '../src/errors';
import {
  formatPciModalias,
  hex2,
  hex4,
  isPciModalias,
  modaliasClassCode,
  type PciModalias,
  parsePciModalias,
} from '../src/pci/modalias';

const CX_VF = 'pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00i00';

function reasonOf(input: string): string {
  try {
    parsePciModalias(input);
  } catch (error) {
    expect(error).toBeInstanceOf(ParseError);
    if (!(error instanceof ParseError)) throw error;
    expect(error.subject).toBe('modalias');
    expect(error.input).toBe(input);
    return error.reason;
  }
  throw new Error(`${JSON.stringify(input)} was accepted`);
}

describe('parsePciModalias', () => {
  it('parses every field of a real ConnectX VF modalias', () => {
    expect(parsePciModalias(CX_VF)).toEqual({
      vendor: 0x15b3,
      device: 0x101e,
      subvendor: 0x15b3,
      subdevice: 0x0001,
      baseClass: 0x02,
      subClass: 0x00,
      progIf: 0x00,
    });
  });

  it('drops the trailing newline sysfs ends the file with, and trailing blanks', () => {
    expect(parsePciModalias(`${CX_VF}\n`)).toEqual(parsePciModalias(CX_VF));
    expect(parsePciModalias(`${CX_VF} \t\r\n`)).toEqual(parsePciModalias(CX_VF));
  });

  it('parses all 29 modaliases of the real ghw sysfs snapshot and writes them back byte for byte', () => {
    const lines = readTestdata('sysfs', 'ghw-linux-amd64-accel-nvidia.modalias.tsv')
      .split('\n')
      .filter((line) => line.length > 0);
    expect(lines).toHaveLength(29);
    for (const line of lines) {
      const [, modalias] = line.split('\t');
      if (modalias === undefined) throw new Error(`no tab in ${line}`);
      const parsed = parsePciModalias(modalias);
      expect(formatPciModalias(parsed)).toBe(modalias);
    }
    const p100 = lines.find((line) => line.includes('0000:06:00.0/modalias'));
    const parsed = parsePciModalias(p100?.split('\t')[1] ?? '');
    expect(hex4(parsed.vendor)).toBe('10de');
    expect(hex4(parsed.device)).toBe('15f8');
    expect(modaliasClassCode(parsed)).toBe('030200');
  });

  it.each([
    ['', 'must start with "pci:", found ""'],
    ['usb:v1D6Bp0002d0515dc09dsc00dp03ic09isc00ip00in00', 'must start with "pci:", found "usb:"'],
    [
      'PCI:v000015B3d0000101Esv000015B3sd00000001bc02sc00i00',
      'must start with "pci:", found "PCI:"',
    ],
    [` ${CX_VF}`, 'must start with "pci:", found " pci"'],
    ['pci:', 'field "v" (vendor ID) is missing at the end'],
    ['pci:v000015B3', 'field "d" (device ID) is missing at the end'],
    [
      'pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00',
      'field "i" (programming interface) is missing at the end',
    ],
    [
      'pci:v000015B3sv000015B3sd00000001bc02sc00i00',
      'field "d" (device ID) is missing: found "sv" at offset 13 instead; fields must come in the order v, d, sv, sd, bc, sc, i',
    ],
    [
      'pci:v000015B3d0000101Esv000015B3sd00000001bc02i00',
      'field "sc" (subclass) is missing: found "i" at offset 46 instead; fields must come in the order v, d, sv, sd, bc, sc, i',
    ],
    [
      'pci:d0000101Ev000015B3sv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) is out of place: expected it at offset 4, found "d000"; fields must come in the order v, d, sv, sd, bc, sc, i',
    ],
    [
      'pci:v000015B3d0000101Esd00000001sv000015B3bc02sc00i00',
      'field "sv" (subsystem vendor ID) is out of place: expected it at offset 22, found "sd00"; fields must come in the order v, d, sv, sd, bc, sc, i',
    ],
    [
      'pci:v15B3d0000101Esv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) "15B3" has 4 hex digits, expected exactly 8',
    ],
    [
      'pci:v0000015B3d0000101Esv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) "0000015B3" has 9 hex digits, expected exactly 8',
    ],
    [
      'pci:v000015B3d0000101Esv000015B3sd00000001bc2sc00i00',
      'field "bc" (base class) "2" has 1 hex digit, expected exactly 2',
    ],
    [
      'pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00i000',
      'field "i" (programming interface) "000" has 3 hex digits, expected exactly 2',
    ],
    [
      'pci:vd0000101Esv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) has no hex digits: expected 8 uppercase hex digits at offset 5, found "d000"',
    ],
    [
      'pci:v*d*sv*sd*bc*sc*i*',
      'field "v" (vendor ID) has no hex digits: expected 8 uppercase hex digits at offset 5, found "*d*s"',
    ],
    [
      'pci:v000015b3d0000101Esv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) "000015b3" has lowercase hex; the kernel writes uppercase (000015B3)',
    ],
    [
      'pci:v000015B3d0000101esv000015B3sd00000001bc02sc00i00',
      'field "d" (device ID) "0000101e" has lowercase hex; the kernel writes uppercase (0000101E)',
    ],
    [
      'pci:v000015B3d0000101Esv000015B3sd00000001bc02sc00i0a',
      'field "i" (programming interface) "0a" has lowercase hex; the kernel writes uppercase (0A)',
    ],
    [`${CX_VF}X`, 'trailing junk after the last field: "X"'],
    [`${CX_VF}x`, 'trailing junk after the last field: "x"'],
    [`${CX_VF} junk`, 'trailing junk after the last field: " junk"'],
    [
      'pci:v000115B3d0000101Esv000015B3sd00000001bc02sc00i00',
      'field "v" (vendor ID) 000115B3 does not fit the 16-bit register it comes from',
    ],
  ])('rejects %j: %s', (input, reason) => {
    expect(reasonOf(input)).toBe(reason);
    expect(isPciModalias(input)).toBe(false);
  });
});

describe('formatPciModalias', () => {
  it('round-trips every valid field combination', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const u8 = fc.integer({ min: 0, max: 0xff });
    const modalias = fc.record({
      vendor: u16,
      device: u16,
      subvendor: u16,
      subdevice: u16,
      baseClass: u8,
      subClass: u8,
      progIf: u8,
    });
    fc.assert(
      fc.property(modalias, (m: PciModalias) => {
        const text = formatPciModalias(m);
        expect(text).toMatch(
          /^pci:v[0-9A-F]{8}d[0-9A-F]{8}sv[0-9A-F]{8}sd[0-9A-F]{8}bc[0-9A-F]{2}sc[0-9A-F]{2}i[0-9A-F]{2}$/,
        );
        expect(parsePciModalias(text)).toEqual(m);
      }),
    );
  });

  it('refuses values the registers cannot hold', () => {
    const base = parsePciModalias(CX_VF);
    expect(() => formatPciModalias({ ...base, vendor: 0x10000 })).toThrow(RangeError);
    expect(() => formatPciModalias({ ...base, baseClass: 0x100 })).toThrow(RangeError);
    expect(() => formatPciModalias({ ...base, progIf: -1 })).toThrow(RangeError);
  });

  it('hex helpers write lowercase, zero-padded', () => {
    expect(hex4(0x15b3)).toBe('15b3');
    expect(hex4(0x1)).toBe('0001');
    expect(hex2(0xc)).toBe('0c');
  });
});
