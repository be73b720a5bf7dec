import { readTestdata } from '@vfio-fleet/testdata';
import { describe, expect, it } from 'vitest';
import { PciIdsDatabase } from '../src/pci/pci-ids';

const realText = readTestdata('pci.ids');

describe('PciIdsDatabase on the real 2026.10.24 pci.ids', () => {
  const db = PciIdsDatabase.parse(realText);

  it('parses the whole file without errors, with the counts grep gives', () => {
    expect(db.errors).toEqual([]);
    expect(db.version).toBe('2026.10.24');
    // grep -cP '^[0-9a-f]{4}  ' and '^\t[0-9a-f]{4}  ' before the class section.
    expect(db.vendorCount).toBe(2522);
    expect(db.deviceCount).toBe(21693);
  });

  it('parses quickly enough to do on every scan', () => {
    PciIdsDatabase.parse(realText); // warm up the JIT
    const started = performance.now();
    PciIdsDatabase.parse(realText);
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  it('names GH200, which older pci.ids files lack', () => {
    expect(db.lookup({ vendorId: '10de', deviceId: '2342', classCode: '030200' })).toEqual({
      vendor: 'NVIDIA Corporation',
      device: 'GH100 [GH200 120GB / 480GB]',
      subsystem: null,
      className: '3D controller',
    });
  });

  it('names the ConnectX VF family, IDs in any case', () => {
    const names = db.lookup({
      vendorId: '15B3',
      deviceId: '101E',
      subsystemVendorId: '15b3',
      subsystemDeviceId: '0083',
      classCode: '020000',
    });
    expect(names.vendor).toBe('Mellanox Technologies');
    expect(names.device).toBe('ConnectX Family mlx5Gen Virtual Function');
    expect(names.subsystem).toBeNull();
    expect(names.className).toBe('Ethernet controller');
  });

  it('names a subsystem', () => {
    const names = db.lookup({
      vendorId: '8086',
      deviceId: '1521',
      subsystemVendorId: '1028',
      subsystemDeviceId: '0757',
      classCode: '020000',
    });
    expect(names.device).toBe('I350 Gigabit Network Connection');
    expect(names.subsystem).toBe('Gigabit I350-t LOM');
  });

  it('names classes from the C section, with the prog-if where it matters', () => {
    const cls = (classCode: string) =>
      db.lookup({ vendorId: '1b36', deviceId: '000d', classCode }).className;
    expect(cls('0c0330')).toBe('USB controller (XHCI)');
    expect(cls('010802')).toBe('Non-Volatile memory controller (NVM Express)');
    expect(cls('030000')).toBe('VGA compatible controller');
    expect(cls('0705ff')).toBe('Smard Card controller'); // the database's own spelling wins
  });

  it('returns nulls for unknown IDs and falls back to the built-in class table', () => {
    expect(db.lookup({ vendorId: 'fff0', deviceId: '0001', classCode: '7f0000' })).toEqual({
      vendor: null,
      device: null,
      subsystem: null,
      className: 'Class 7f00',
    });
    expect(
      db.lookup({ vendorId: '10de', deviceId: 'fffe', classCode: '0380ff' }).device,
    ).toBeNull();
  });
});

describe('PciIdsDatabase on damaged input', () => {
  const text = [
    '# Version: 2099.01.01',
    '',
    '1234  Good Vendor',
    '\t0001  Good Device',
    '\t\t1234 0010  Good Subsystem',
    '\t\t1234 001  Short subsystem ID',
    '\t\t12340010  No blank between IDs',
    '\t0002',
    '\t\t1234 0020  Orphan of a broken device',
    '\t0003  Device Three\r',
    '\t\t\t0000  Too deep',
    '12g4  Broken Vendor',
    '\t0001  Orphan of a broken vendor',
    '1234  Duplicate Vendor',
    '\t0009  Should not be added',
    '\t0001  Duplicate Device',
    'abcd  Second Vendor',
    '\t0001  Second Device',
    '\t0001  Twice',
    '  # indented comment',
    'HID 01  Not a pci.ids section',
    '\t01  HID entry',
    'C 02  Network controller',
    '\t00  Ethernet controller',
    '\t\t01  IDPF',
    '\txy  Bad subclass',
    '\t\tzz  Bad prog-if',
    'C 0c  Serial bus controller',
    '\t03  USB controller',
    '\t\t30  XHCI',
    '\t\t30  Duplicate XHCI',
    '',
  ].join('\n');
  const db = PciIdsDatabase.parse(text);

  it('keeps every good line', () => {
    expect(db.version).toBe('2099.01.01');
    expect(db.vendorCount).toBe(2);
    expect(db.deviceCount).toBe(3);
    expect(
      db.lookup({
        vendorId: '1234',
        deviceId: '0001',
        subsystemVendorId: '1234',
        subsystemDeviceId: '0010',
        classCode: '020000',
      }),
    ).toEqual({
      vendor: 'Good Vendor',
      device: 'Good Device',
      subsystem: 'Good Subsystem',
      className: 'Ethernet controller',
    });
    expect(db.lookup({ vendorId: '1234', deviceId: '0003', classCode: '0c0330' })).toMatchObject({
      device: 'Device Three',
      className: 'USB controller (XHCI)',
    });
    expect(
      db.lookup({ vendorId: '1234', deviceId: '0009', classCode: '020000' }).device,
    ).toBeNull();
    expect(db.lookup({ vendorId: 'abcd', deviceId: '0001', classCode: '020000' }).device).toBe(
      'Second Device',
    );
  });

  it('reports each damaged line once, with its number, and skips the children of a broken parent', () => {
    expect(db.errors.map((e) => [e.line, e.message])).toEqual([
      [6, 'expected "\\t\\tsvvv sddd  Subsystem name" (two 4-hex-digit IDs, then the name)'],
      [7, 'expected "\\t\\tsvvv sddd  Subsystem name" (two 4-hex-digit IDs, then the name)'],
      [
        8,
        'expected "\\tdddd  Device name" (4 hex digits, then the name); its subsystems are skipped',
      ],
      [11, 'indented 3 tabs; pci.ids nests at most 2'],
      [12, 'expected "vvvv  Vendor name" (4 hex digits, then the name); its devices are skipped'],
      [14, "duplicate vendor 1234; the first one is kept and this one's devices are skipped"],
      [19, "duplicate device 0001; the first one is kept and this one's subsystems are skipped"],
      [21, 'unknown section "HID"; its entries are skipped'],
      [26, 'expected "\\tss  Subclass name" (2 hex digits, then the name)'],
      [31, 'duplicate programming interface 30; the first one is kept'],
    ]);
    expect(db.errors[0]?.text).toBe('\t\t1234 001  Short subsystem ID');
  });

  it('never throws on garbage', () => {
    const junk = PciIdsDatabase.parse(
      '\tabcd  orphan device\n\t\tabcd 0001  orphan subsystem\n\u0000\n\t\t\n\tabcd  skipped\nC\nC zz\n',
    );
    expect(junk.vendorCount).toBe(0);
    // Lines 2 and 5 belong to the broken lines 1 and 3: skipped without errors of their own.
    expect(junk.errors.map((e) => e.line)).toEqual([1, 3, 6, 7]);
  });
});
