/**
 * The pci.ids database (https://pci-ids.ucw.cz), as lspci reads it, for human names of vendors,
 * devices, subsystems and classes. It is ~1.4 MB and read on every scan, so parsing is one pass of
 * indexOf/charCodeAt with no regular expression per line. A damaged line is reported with its
 * number and skipped, never fatal: names are decoration, and an inventory without them is still
 * correct.
 *
 * Format: `vvvv  Vendor`, `\tdddd  Device`, `\t\tsvvv sddd  Subsystem`; after `C cc  Class`, the
 * same indentation gives `\tss  Subclass` and `\t\tpp  Prog-if`. `#` starts a comment line.
 */
import type { LineError } from '../errors';
import { composeClassName, PROG_IF_SUBCLASSES, pciClassName } from './class-names';

export interface PciNames {
  vendor: string | null;
  device: string | null;
  subsystem: string | null;
  /** Always set: from the database's class section, else the built-in class table. */
  className: string;
}

export interface PciIdsLookup {
  vendorId: string;
  deviceId: string;
  subsystemVendorId?: string | null;
  subsystemDeviceId?: string | null;
  /** 6 hex digits: base class, subclass, prog-if. */
  classCode: string;
}

interface DeviceEntry {
  name: string;
  /** Keyed `svvv sddd`, as the file writes it; created only for the ~10% of devices with any. */
  subsystems: Map<string, string> | null;
}

interface VendorEntry {
  name: string;
  devices: Map<string, DeviceEntry>;
}

interface SubclassEntry {
  name: string;
  progIfs: Map<string, string>;
}

interface ClassEntry {
  name: string;
  subclasses: Map<string, SubclassEntry>;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

function isBlank(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** `width` hex digits at `pos`, lowercased, or null. */
function hexAt(line: string, pos: number, width: number): string | null {
  if (pos + width > line.length) return null;
  for (let i = pos; i < pos + width; i++) if (!isHexDigit(line.charCodeAt(i))) return null;
  return line.slice(pos, pos + width).toLowerCase();
}

/** The name after an ID: at least one blank (the file uses two), then non-empty text. */
function nameAt(line: string, pos: number): string | null {
  if (pos >= line.length || !isBlank(line.charCodeAt(pos))) return null;
  const name = line.slice(pos).trim();
  return name.length > 0 ? name : null;
}

type Section = 'vendors' | 'classes' | 'unknown';

export class PciIdsDatabase {
  /** Malformed lines, skipped; the rest of the file is used. */
  readonly errors: LineError[] = [];
  private fileVersion: string | null = null;
  private readonly vendors = new Map<string, VendorEntry>();
  private readonly classes = new Map<string, ClassEntry>();
  private devices = 0;

  private constructor() {}

  /** From the `# Version: 2026.10.24` header comment, when present. */
  get version(): string | null {
    return this.fileVersion;
  }

  get vendorCount(): number {
    return this.vendors.size;
  }

  get deviceCount(): number {
    return this.devices;
  }

  /** Parses pci.ids text. Never throws: malformed lines end up in `errors`. */
  static parse(text: string): PciIdsDatabase {
    const db = new PciIdsDatabase();
    db.load(text);
    return db;
  }

  private load(text: string): void {
    let section: Section = 'vendors';
    let vendor: VendorEntry | null = null;
    let device: DeviceEntry | null = null;
    let klass: ClassEntry | null = null;
    let subclass: SubclassEntry | null = null;
    // After a malformed or duplicate parent line, its children cannot be attributed to the
    // previous parent; they are skipped quietly (the parent's error says so).
    let skipDeeperThan = -1;

    let lineNo = 0;
    let start = 0;
    const len = text.length;
    while (start < len) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = len;
      lineNo++;
      let line = text.slice(start, end);
      start = end + 1;
      if (line.charCodeAt(line.length - 1) === 0x0d) line = line.slice(0, -1);

      let depth = 0;
      while (depth < line.length && line.charCodeAt(depth) === 0x09) depth++;
      if (depth === line.length || line.trim().length === 0) continue;
      let first = depth;
      while (first < line.length && isBlank(line.charCodeAt(first))) first++;
      if (line.charCodeAt(first) === 0x23 /* # */) {
        if (this.fileVersion === null && depth === 0) {
          const m = /^#\s*Version:\s*(\S+)/.exec(line);
          if (m?.[1] !== undefined) this.fileVersion = m[1];
        }
        continue;
      }
      if (skipDeeperThan >= 0) {
        if (depth > skipDeeperThan) continue;
        skipDeeperThan = -1;
      }
      const fail = (message: string, skipChildren: boolean) => {
        this.errors.push({ line: lineNo, text: line, message });
        if (skipChildren) skipDeeperThan = depth;
      };

      if (depth === 0) {
        vendor = null;
        device = null;
        klass = null;
        subclass = null;
        if (line.startsWith('C ')) {
          section = 'classes';
          const id = hexAt(line, 2, 2);
          const name = nameAt(line, 4);
          if (id === null || name === null) {
            fail('expected "C cc  Class name" (2 hex digits, then the name)', true);
          } else if (this.classes.has(id)) {
            fail(`duplicate class ${id}; the first one is kept`, true);
          } else {
            klass = { name, subclasses: new Map() };
            this.classes.set(id, klass);
          }
          continue;
        }
        const id = hexAt(line, 0, 4);
        if (id === null && /^[A-Z]+ /.test(line)) {
          // usb.ids-style sections (AT, HID, L...) are not part of pci.ids; one error, not one per entry.
          section = 'unknown';
          fail(
            `unknown section "${line.slice(0, line.indexOf(' '))}"; its entries are skipped`,
            true,
          );
          continue;
        }
        section = 'vendors';
        const name = nameAt(line, 4);
        if (id === null || name === null) {
          fail(
            'expected "vvvv  Vendor name" (4 hex digits, then the name); its devices are skipped',
            true,
          );
        } else if (this.vendors.has(id)) {
          fail(
            `duplicate vendor ${id}; the first one is kept and this one's devices are skipped`,
            true,
          );
        } else {
          vendor = { name, devices: new Map() };
          this.vendors.set(id, vendor);
        }
        continue;
      }

      if (depth > 2) {
        fail(`indented ${depth} tabs; pci.ids nests at most 2`, false);
        continue;
      }

      if (section === 'unknown') continue;

      if (section === 'classes') {
        if (depth === 1) {
          subclass = null;
          if (klass === null) {
            fail('subclass line outside a class', true);
            continue;
          }
          const id = hexAt(line, 1, 2);
          const name = nameAt(line, 3);
          if (id === null || name === null) {
            fail('expected "\\tss  Subclass name" (2 hex digits, then the name)', true);
          } else if (klass.subclasses.has(id)) {
            fail(`duplicate subclass ${id}; the first one is kept`, true);
          } else {
            subclass = { name, progIfs: new Map() };
            klass.subclasses.set(id, subclass);
          }
        } else {
          if (subclass === null) {
            fail('programming interface line outside a subclass', false);
            continue;
          }
          const id = hexAt(line, 2, 2);
          const name = nameAt(line, 4);
          if (id === null || name === null) {
            fail(
              'expected "\\t\\tpp  Programming interface name" (2 hex digits, then the name)',
              false,
            );
          } else if (subclass.progIfs.has(id)) {
            fail(`duplicate programming interface ${id}; the first one is kept`, false);
          } else {
            subclass.progIfs.set(id, name);
          }
        }
        continue;
      }

      if (depth === 1) {
        device = null;
        if (vendor === null) {
          fail('device line outside a vendor', true);
          continue;
        }
        const id = hexAt(line, 1, 4);
        const name = nameAt(line, 5);
        if (id === null || name === null) {
          fail(
            'expected "\\tdddd  Device name" (4 hex digits, then the name); its subsystems are skipped',
            true,
          );
        } else if (vendor.devices.has(id)) {
          fail(
            `duplicate device ${id}; the first one is kept and this one's subsystems are skipped`,
            true,
          );
        } else {
          device = { name, subsystems: null };
          vendor.devices.set(id, device);
          this.devices++;
        }
        continue;
      }

      if (device === null) {
        fail('subsystem line outside a device', false);
        continue;
      }
      const sv = hexAt(line, 2, 4);
      const sd = line.charCodeAt(6) === 0x20 ? hexAt(line, 7, 4) : null;
      const name = nameAt(line, 11);
      if (sv === null || sd === null || name === null) {
        fail(
          'expected "\\t\\tsvvv sddd  Subsystem name" (two 4-hex-digit IDs, then the name)',
          false,
        );
        continue;
      }
      device.subsystems ??= new Map();
      const key = `${sv} ${sd}`;
      if (device.subsystems.has(key)) {
        fail(`duplicate subsystem ${key}; the first one is kept`, false);
      } else {
        device.subsystems.set(key, name);
      }
    }
  }

  /**
   * Names for one device, as lspci would show them. IDs may be in either case. `subsystem` is the
   * name of the exact subsystem entry under this device, null when the file has none.
   * `className` is the database's subclass name (with the prog-if for USB, SATA and NVMe), else
   * the built-in table's. Throws ParseError only for a malformed class code.
   */
  lookup(ids: PciIdsLookup): PciNames {
    const vendor = this.vendors.get(ids.vendorId.toLowerCase()) ?? null;
    const device = vendor?.devices.get(ids.deviceId.toLowerCase()) ?? null;
    let subsystem: string | null = null;
    if (device?.subsystems && ids.subsystemVendorId && ids.subsystemDeviceId) {
      const key = `${ids.subsystemVendorId} ${ids.subsystemDeviceId}`.toLowerCase();
      subsystem = device.subsystems.get(key) ?? null;
    }
    return {
      vendor: vendor?.name ?? null,
      device: device?.name ?? null,
      subsystem,
      className: this.className(ids.classCode),
    };
  }

  private className(classCode: string): string {
    if (!/^[0-9a-f]{6}$/i.test(classCode)) return pciClassName(classCode); // throws ParseError
    const code = classCode.toLowerCase();
    const sub = this.classes.get(code.slice(0, 2))?.subclasses.get(code.slice(2, 4));
    if (sub === undefined) return pciClassName(code);
    const progIf = PROG_IF_SUBCLASSES.has(code.slice(0, 4))
      ? (sub.progIfs.get(code.slice(4, 6)) ?? null)
      : null;
    return composeClassName(sub.name, progIf);
  }
}
