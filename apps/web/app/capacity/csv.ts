/**
 * The capacity table as CSV (RFC 4180), built in the browser from the rows on screen. Names come
 * from agents' pci.ids, so a cell starting with = + - @ is prefixed with ' to keep spreadsheets
 * from running it as a formula (OWASP's CSV injection advice).
 */

export const CAPACITY_CSV_FILENAME = 'vfio-fleet-capacity.csv';

export const CAPACITY_CSV_COLUMNS = [
  'vendor_id',
  'device_id',
  'vendor',
  'device',
  'total',
  'bound',
  'ready',
  'blocked',
  'in_use',
  'vf_headroom',
  'hosts',
  'class',
] as const;

export interface CapacityCsvRow {
  vendorId: string;
  deviceId: string;
  vendorName: string | null;
  deviceName: string | null;
  className: string | null;
  hosts: number;
  total: number;
  bound: number;
  ready: number;
  blocked: number;
  /** Held by a VM: among `bound` (on vfio) but not free. */
  inUse: number;
  vfHeadroom: number;
}

function cell(value: string | number | null): string {
  if (value === null) return '';
  if (typeof value === 'number') return String(value);
  const safe = /^[=+\-@\t\r]/.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

export function capacityCsv(rows: readonly CapacityCsvRow[]): string {
  const lines = [CAPACITY_CSV_COLUMNS.join(',')];
  for (const r of rows) {
    lines.push(
      [
        r.vendorId,
        r.deviceId,
        r.vendorName,
        r.deviceName,
        r.total,
        r.bound,
        r.ready,
        r.blocked,
        r.inUse,
        r.vfHeadroom,
        r.hosts,
        r.className,
      ]
        .map(cell)
        .join(','),
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}

/** Saves text as a file through a temporary object URL (no server round trip). */
export function downloadText(
  filename: string,
  text: string,
  type = 'text/csv;charset=utf-8',
): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  // Revoked on the next tick: some browsers start the download asynchronously.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
