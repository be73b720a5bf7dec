// Device modaliases for alias-matching tests, derived from real modules.alias patterns and from
// the real sysfs snapshot. Written independently of the index code (a plain RegExp here) so that
// the tests do not reuse the logic they check.
import { readTestdata } from '@vfio-fleet/testdata';

const CANONICAL_PATTERN =
  /^(?:vfio_)?pci:v([0-9A-F]{8}|\*)d([0-9A-F]{8}|\*)sv([0-9A-F]{8}|\*)sd([0-9A-F]{8}|\*)bc([0-9A-F]{2}|\*)sc([0-9A-F]{2}|\*)i([0-9A-F]{2}|\*)\*?$/;

/** Values for the fields a pattern leaves as `*` (any concrete hex of the right width). */
export interface FieldFill {
  vendor: string;
  device: string;
  subvendor: string;
  subdevice: string;
  baseclass: string;
  subclass: string;
  interface: string;
}

export const DEFAULT_FILL: FieldFill = {
  vendor: '00001234',
  device: '00005678',
  subvendor: '00001AF4',
  subdevice: '00001100',
  baseclass: '02',
  subclass: '00',
  interface: '00',
};

/**
 * The `pci:` modalias of a device that `pattern` (pci: or vfio_pci:) describes: its literal fields
 * kept, its `*` fields filled from `fill`. Null for a pattern not of file2alias's shape.
 */
export function modaliasFor(pattern: string, fill: FieldFill = DEFAULT_FILL): string | null {
  const m = CANONICAL_PATTERN.exec(pattern);
  if (m === null) return null;
  const pick = (i: number, fallback: string): string => {
    const value = m[i];
    return value === undefined || value === '*' ? fallback : value;
  };
  return (
    `pci:v${pick(1, fill.vendor)}d${pick(2, fill.device)}` +
    `sv${pick(3, fill.subvendor)}sd${pick(4, fill.subdevice)}` +
    `bc${pick(5, fill.baseclass)}sc${pick(6, fill.subclass)}i${pick(7, fill.interface)}`
  );
}

/** The 29 real modaliases of the ghw QEMU snapshot (`path<TAB>modalias` lines). */
export function readSnapshotModaliases(): string[] {
  return readTestdata('sysfs', 'ghw-linux-amd64-accel-nvidia.modalias.tsv')
    .split('\n')
    .filter((line) => line.includes('\t'))
    .map((line) => line.slice(line.indexOf('\t') + 1).trim());
}
