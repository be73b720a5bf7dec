/**
 * Column alignment for plain-text tables. Widths are measured on the text before styling, since
 * escape codes take no columns on screen.
 */
export type Cell = string | { text: string; paint: (text: string) => string };

function textOf(cell: Cell): string {
  return typeof cell === 'string' ? cell : cell.text;
}

/** Column widths over all rows, so separate sections of one table line up. */
export function columnWidths(rows: ReadonlyArray<readonly Cell[]>): number[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, textOf(cell).length);
    });
  }
  return widths;
}

/** One row, cells padded to `widths` and separated by two spaces; the last cell is not padded. */
export function formatRow(row: readonly Cell[], widths: readonly number[], indent = ''): string {
  const parts = row.map((cell, i) => {
    const text = textOf(cell);
    const padded = i === row.length - 1 ? text : text.padEnd(widths[i] ?? text.length);
    if (typeof cell === 'string') return padded;
    return cell.paint(text) + padded.slice(text.length);
  });
  return `${indent}${parts.join('  ')}`.trimEnd();
}

export function formatTable(rows: ReadonlyArray<readonly Cell[]>, indent = ''): string[] {
  const widths = columnWidths(rows);
  return rows.map((row) => formatRow(row, widths, indent));
}
