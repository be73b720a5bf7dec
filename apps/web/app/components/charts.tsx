/**
 * Plain inline SVG charts: no chart library for one kind of bar. Every chart is an `img` with a
 * <title> and <desc>, prints its numbers as text beside the bars, and its data is also in a table
 * on the same page, so nothing is said by colour or length alone.
 */
import { useId } from 'react';

export interface StackSegment {
  label: string;
  value: number;
  /** A CSS colour; the legend repeats it next to the label's word. */
  color: string;
}

export interface StackedBarRow {
  key: string;
  label: string;
  /** A second line under the label (e.g. the `vendor:device` ids). */
  sublabel?: string;
  segments: StackSegment[];
}

const ROW_HEIGHT = 34;
const LABEL_WIDTH = 330;
const BAR_WIDTH = 520;
const VALUE_WIDTH = 250;
const WIDTH = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH;

/** Cuts a label to fit the label column (SVG text does not wrap); the full text is in <title>. */
function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/**
 * One horizontal stacked bar per row, all on one scale (the largest row's sum), with a legend and
 * each row's values as text.
 */
export function StackedBarChart({
  title,
  description,
  rows,
  legend,
}: {
  title: string;
  description: string;
  rows: StackedBarRow[];
  legend: { label: string; color: string }[];
}) {
  const id = useId();
  const max = Math.max(1, ...rows.map((r) => r.segments.reduce((s, x) => s + x.value, 0)));
  const height = rows.length * ROW_HEIGHT + 8;
  return (
    <figure style={{ margin: 0 }}>
      <div className="row small" aria-hidden="true" style={{ marginBottom: 6 }}>
        {legend.map((l) => (
          <span key={l.label} className="row" style={{ gap: 4 }}>
            <svg width="12" height="12" role="presentation">
              <rect width="12" height="12" rx="2" fill={l.color} />
            </svg>
            {l.label}
          </span>
        ))}
      </div>
      <svg
        role="img"
        aria-labelledby={`${id}-title ${id}-desc`}
        viewBox={`0 0 ${WIDTH} ${height}`}
        width="100%"
        style={{ maxWidth: WIDTH, display: 'block' }}
      >
        <title id={`${id}-title`}>{title}</title>
        <desc id={`${id}-desc`}>{description}</desc>
        {rows.map((row, i) => {
          const y = i * ROW_HEIGHT + 4;
          let x = LABEL_WIDTH;
          const total = row.segments.reduce((s, x) => s + x.value, 0);
          return (
            <g key={row.key}>
              <title>
                {`${row.label}${row.sublabel ? ` (${row.sublabel})` : ''}: ${row.segments
                  .map((s) => `${s.value} ${s.label}`)
                  .join(', ')}`}
              </title>
              <text x={0} y={y + 12} fontSize="12" fill="var(--ink)">
                {truncate(row.label, 48)}
              </text>
              {row.sublabel === undefined ? null : (
                <text x={0} y={y + 26} fontSize="10.5" fill="var(--muted)" fontFamily="var(--mono)">
                  {row.sublabel}
                </text>
              )}
              <rect x={LABEL_WIDTH} y={y + 4} width={BAR_WIDTH} height={18} fill="#eef0f4" rx="2" />
              {row.segments.map((s) => {
                const w = (s.value / max) * BAR_WIDTH;
                const rect = (
                  <rect key={s.label} x={x} y={y + 4} width={w} height={18} fill={s.color} />
                );
                x += w;
                return rect;
              })}
              <text
                x={LABEL_WIDTH + BAR_WIDTH + 10}
                y={y + 17}
                fontSize="12"
                fill="var(--ink)"
                style={{ fontVariantNumeric: 'tabular-nums' }}
              >
                {`${row.segments.map((s) => `${s.value} ${s.label}`).join(' · ')} / ${total}`}
              </text>
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
