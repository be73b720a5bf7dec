/**
 * Parser for the text `modules.alias` that depmod writes (`alias <pattern> <module>` per line).
 * Only the PCI buses matter to vfio-fleet: `pci:` aliases say which driver claims a device, and
 * `vfio_pci:` aliases (Linux 5.16+) say which vfio variant driver should take it for passthrough.
 * Every other alias (usb, acpi, of, fs-, char-major-...) is counted and skipped.
 *
 * A damaged line must not cost the rest of the file: each one is reported with its line number and
 * the good lines are kept. The file is ~30,000 lines on a stock kernel, read on every scan, so this
 * is a single pass over the text with plain string scanning, no regular expression per line.
 */
import type { LineError } from '../errors';

export type AliasBus = 'pci' | 'vfio_pci';

export interface AliasEntry {
  /** The fnmatch pattern, verbatim, e.g. `vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*`. */
  pattern: string;
  /** Module name, normalized like kmod does (`-` → `_`). */
  module: string;
  /** 1-based line in modules.alias; file order breaks ties between equally specific aliases. */
  line: number;
  bus: AliasBus;
}

export interface ModulesAlias {
  /** `pci:` and `vfio_pci:` aliases in file order. */
  entries: AliasEntry[];
  /** Malformed lines; they are skipped. */
  errors: LineError[];
  totalLines: number;
  /** Well-formed aliases of other buses, skipped. */
  otherAliases: number;
}

/**
 * The kernel's MODULE_NAME_LEN is 64 - sizeof(unsigned long) including the NUL, so a module name
 * has at most 55 characters on 64-bit hosts; a longer one cannot be a real module.
 */
const MAX_MODULE_NAME = 55;

const PCI_PREFIX = 'pci:';
const VFIO_PCI_PREFIX = 'vfio_pci:';

function isSeparator(c: number): boolean {
  // Space, tab, and a CR left by CRLF line endings: depmod writes single spaces, but a file that
  // went through an editor should not turn into a wall of errors.
  return c === 0x20 || c === 0x09 || c === 0x0d;
}

/** Module names come from .ko file names: letters, digits, `_` and `-` (which kmod folds to `_`). */
function isModuleNameChar(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x5f ||
    c === 0x2d
  );
}

/** Splits a line on runs of blanks; returns at most `max + 1` fields so a long line costs nothing. */
function fields(line: string, max: number): string[] {
  const out: string[] = [];
  let i = 0;
  const len = line.length;
  while (i < len && out.length <= max) {
    while (i < len && isSeparator(line.charCodeAt(i))) i++;
    if (i >= len) break;
    const start = i;
    while (i < len && !isSeparator(line.charCodeAt(i))) i++;
    out.push(line.slice(start, i));
  }
  return out;
}

function moduleNameProblem(module: string): string | null {
  if (module.length > MAX_MODULE_NAME) {
    return `module name is ${module.length} characters long, more than the kernel's ${MAX_MODULE_NAME}`;
  }
  for (let i = 0; i < module.length; i++) {
    const c = module.charCodeAt(i);
    if (!isModuleNameChar(c)) {
      return `module name ${JSON.stringify(module)} contains ${JSON.stringify(module[i])}; only letters, digits, "_" and "-" are allowed`;
    }
  }
  return null;
}

function busOf(pattern: string): AliasBus | null {
  if (pattern.startsWith(PCI_PREFIX)) return 'pci';
  if (pattern.startsWith(VFIO_PCI_PREFIX)) return 'vfio_pci';
  return null;
}

/** Parses a `modules.alias` text, keeping the `pci:` and `vfio_pci:` aliases. Never throws. */
export function parseModulesAlias(text: string): ModulesAlias {
  const entries: AliasEntry[] = [];
  const errors: LineError[] = [];
  let otherAliases = 0;
  let lineNo = 0;
  let start = 0;
  const len = text.length;

  // A trailing newline ends the last line; it does not start an extra, empty one.
  while (start < len) {
    let end = text.indexOf('\n', start);
    if (end < 0) end = len;
    lineNo++;
    const line = text.slice(start, end);
    start = end + 1;

    let first = 0;
    while (first < line.length && isSeparator(line.charCodeAt(first))) first++;
    if (first === line.length) continue;
    if (line.charCodeAt(first) === 0x23 /* # */) continue;

    const parts = fields(line, 3);
    if (parts[0] !== 'alias') {
      errors.push({
        line: lineNo,
        text: line,
        message: `expected "alias <pattern> <module>", found ${JSON.stringify(parts[0])} first`,
      });
      continue;
    }
    const pattern = parts[1];
    const rawModule = parts[2];
    // depmod writes a MODULE_ALIAS containing blanks verbatim (real arm64 kernels have several:
    // `alias mt8183_da7219_max98357 soc card mt8183_da7219_max98357`). Such a line is real kernel
    // output, not damage, and it can never match a PCI modalias: skip it like any other bus's alias
    // instead of alarming every arm64 host with "malformed" lines.
    if (parts.length > 3 && pattern !== undefined && busOf(pattern) === null) {
      otherAliases++;
      continue;
    }
    if (pattern === undefined || rawModule === undefined || parts.length > 3) {
      errors.push({
        line: lineNo,
        text: line,
        message:
          parts.length > 3
            ? `expected "alias <pattern> <module>", found ${parts.length}+ fields`
            : 'expected "alias <pattern> <module>": missing the pattern or the module',
      });
      continue;
    }
    const problem = moduleNameProblem(rawModule);
    if (problem !== null) {
      errors.push({ line: lineNo, text: line, message: problem });
      continue;
    }
    const bus = busOf(pattern);
    if (bus === null) {
      otherAliases++;
      continue;
    }
    entries.push({ pattern, module: rawModule.replaceAll('-', '_'), line: lineNo, bus });
  }

  return { entries, errors, totalLines: lineNo, otherAliases };
}
