import { readTestdata } from '@vfio-fleet/testdata';
import { describe, expect, it } from 'vitest';
import { ParseError } from '../src/errors';
import { isBridgeClass, pciClassName } from '../src/pci/class-names';
import { PciIdsDatabase } from '../src/pci/pci-ids';

describe('pciClassName', () => {
  it.each([
    ['0c0330', 'USB controller (XHCI)'],
    ['0c0320', 'USB controller (EHCI)'],
    ['010601', 'SATA controller (AHCI 1.0)'],
    ['010802', 'Non-Volatile memory controller (NVM Express)'],
    ['020000', 'Ethernet controller'],
    ['030000', 'VGA compatible controller'],
    ['030200', '3D controller'],
    ['040300', 'Audio device'],
    ['060400', 'PCI bridge'],
    ['060401', 'PCI bridge'],
    ['120000', 'Processing accelerators'],
    ['0C0330', 'USB controller (XHCI)'],
  ])('names %s as %s', (code, name) => {
    expect(pciClassName(code)).toBe(name);
  });

  it('leaves the prog-if out where it is noise, and where it is unknown', () => {
    expect(pciClassName('030001')).toBe('VGA compatible controller');
    expect(pciClassName('0c0377')).toBe('USB controller');
  });

  it('falls back to the base class name, then to Class xxxx', () => {
    expect(pciClassName('02ee00')).toBe('Network controller');
    expect(pciClassName('130000')).toBe('Non-Essential Instrumentation');
    expect(pciClassName('ff0000')).toBe('Unassigned class');
    expect(pciClassName('7f0100')).toBe('Class 7f01');
  });

  it('throws ParseError for a malformed class code', () => {
    expect(() => pciClassName('0c03')).toThrow(ParseError);
    expect(() => pciClassName('0x0c0330')).toThrow(ParseError);
    expect(() => pciClassName('zz0000')).toThrow('expected 6 hex digits');
  });

  it('agrees with the class section of the real pci.ids for every subclass it names', () => {
    const db = PciIdsDatabase.parse(readTestdata('pci.ids'));
    let compared = 0;
    for (let base = 0; base <= 0xff; base++) {
      for (let sub = 0; sub <= 0xff; sub++) {
        const code = `${base.toString(16).padStart(2, '0')}${sub.toString(16).padStart(2, '0')}00`;
        const builtin = pciClassName(code);
        const fromDb = db.lookup({ vendorId: '0000', deviceId: '0000', classCode: code }).className;
        // The built-in table fixes pci.ids' "Smard Card" typo; everything else must match.
        if (code === '070500') {
          expect(builtin).toBe('Smart Card controller');
          continue;
        }
        expect(builtin, code).toBe(fromDb);
        compared++;
      }
    }
    expect(compared).toBe(0xffff);
    for (const sub of ['0106', '0108', '0c03']) {
      for (let progIf = 0; progIf <= 0xff; progIf++) {
        const code = sub + progIf.toString(16).padStart(2, '0');
        const fromDb = db.lookup({ vendorId: '0000', deviceId: '0000', classCode: code }).className;
        expect(pciClassName(code), code).toBe(fromDb);
      }
    }
  });
});

describe('isBridgeClass', () => {
  it.each(['060000', '060400', '060401', '060700', '060940', '060980'])(
    '%s is a bridge',
    (code) => {
      expect(isBridgeClass(code)).toBe(true);
    },
  );

  it.each(['060100', '068000', '060200', '060500', '030000', '0c0330', '088000'])(
    '%s is not (a type-0 function vfio can take)',
    (code) => {
      expect(isBridgeClass(code)).toBe(false);
    },
  );

  it('throws ParseError for a malformed class code', () => {
    expect(() => isBridgeClass('0604')).toThrow(ParseError);
  });
});
