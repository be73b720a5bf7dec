/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format 0.0.4 (https://prometheus.io/docs/instrumenting/exposition_formats/).
 *
 * Hand-written instead of prom-client: the server needs a dozen series of three metric types,
 * which is ~150 lines with no dependency to pin, audit and keep in the lockfile, and no
 * process-global default registry for tests (several servers in one vitest worker) to collide in.
 */

export type LabelValues<L extends string> = Readonly<Record<L, string>>;

/** The content type Prometheus expects for the text format. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A sample value as the format writes it (+Inf, -Inf, NaN spelled its way). */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Number.POSITIVE_INFINITY) return '+Inf';
  if (value === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(value);
}

/** Label values escape backslash, double quote and newline; nothing else. */
function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function renderLabels(names: readonly string[], values: readonly string[], extra = ''): string {
  const parts = names.map((name, i) => `${name}="${escapeLabelValue(values[i] ?? '')}"`);
  if (extra !== '') parts.push(extra);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

abstract class Metric<L extends string> {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly L[],
  ) {
    if (!NAME.test(name)) throw new Error(`invalid metric name ${name}`);
    for (const label of labelNames) {
      if (!LABEL.test(label) || label === 'le') throw new Error(`invalid label name ${label}`);
    }
  }

  abstract readonly type: 'counter' | 'gauge' | 'histogram';

  /** The values of `labels` in labelNames order, and that order as a map key. */
  protected key(labels: LabelValues<L>): { values: string[]; key: string } {
    const values = this.labelNames.map((name) => labels[name]);
    return { values, key: JSON.stringify(values) };
  }

  abstract samples(): string[];

  render(): string {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`]
      .concat(this.samples())
      .join('\n');
  }
}

class ValueMetric<L extends string> extends Metric<L> {
  readonly type: 'counter' | 'gauge';
  protected readonly series = new Map<string, { values: string[]; value: number }>();

  constructor(type: 'counter' | 'gauge', name: string, help: string, labelNames: readonly L[]) {
    super(name, help, labelNames);
    this.type = type;
  }

  protected add(labels: LabelValues<L>, by: number): void {
    const { values, key } = this.key(labels);
    const entry = this.series.get(key);
    if (entry === undefined) this.series.set(key, { values, value: by });
    else entry.value += by;
  }

  /** The current value of one series (0 when never touched): for tests and health. */
  get(labels: LabelValues<L>): number {
    return this.series.get(this.key(labels).key)?.value ?? 0;
  }

  samples(): string[] {
    return [...this.series.values()].map(
      ({ values, value }) =>
        `${this.name}${renderLabels(this.labelNames, values)} ${formatValue(value)}`,
    );
  }
}

export class Counter<L extends string = never> extends ValueMetric<L> {
  constructor(name: string, help: string, labelNames: readonly L[] = []) {
    super('counter', name, help, labelNames);
  }

  inc(labels: LabelValues<L>, by = 1): void {
    if (!(by >= 0)) throw new Error(`a counter only goes up (${this.name} += ${by})`);
    this.add(labels, by);
  }

  /** Creates the series at 0, so a rate over it exists before the first event. */
  init(labels: LabelValues<L>): void {
    this.add(labels, 0);
  }
}

export class Gauge<L extends string = never> extends ValueMetric<L> {
  constructor(name: string, help: string, labelNames: readonly L[] = []) {
    super('gauge', name, help, labelNames);
  }

  set(labels: LabelValues<L>, value: number): void {
    const { values, key } = this.key(labels);
    this.series.set(key, { values, value });
  }

  /** Drops every series: a gauge read from the database shows nothing rather than stale numbers. */
  clear(): void {
    this.series.clear();
  }
}

export class Histogram<L extends string = never> extends Metric<L> {
  readonly type = 'histogram';
  private readonly buckets: readonly number[];
  private readonly series = new Map<
    string,
    { values: string[]; counts: number[]; sum: number; count: number }
  >();

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[]) {
    super(name, help, labelNames);
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  observe(labels: LabelValues<L>, value: number): void {
    const { values, key } = this.key(labels);
    let entry = this.series.get(key);
    if (entry === undefined) {
      entry = { values, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, entry);
    }
    // Buckets are cumulative in the format; stored per bucket here and summed when rendered.
    const index = this.buckets.findIndex((bound) => value <= bound);
    if (index >= 0) entry.counts[index] = (entry.counts[index] ?? 0) + 1;
    entry.sum += value;
    entry.count += 1;
  }

  init(labels: LabelValues<L>): void {
    const { values, key } = this.key(labels);
    if (!this.series.has(key)) {
      this.series.set(key, { values, counts: this.buckets.map(() => 0), sum: 0, count: 0 });
    }
  }

  /** Number of observations of one series: for tests. */
  count(labels: LabelValues<L>): number {
    return this.series.get(this.key(labels).key)?.count ?? 0;
  }

  samples(): string[] {
    const lines: string[] = [];
    for (const { values, counts, sum, count } of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += counts[i] ?? 0;
        lines.push(
          `${this.name}_bucket${renderLabels(this.labelNames, values, `le="${formatValue(bound)}"`)} ${cumulative}`,
        );
      });
      lines.push(
        `${this.name}_bucket${renderLabels(this.labelNames, values, 'le="+Inf"')} ${count}`,
      );
      lines.push(`${this.name}_sum${renderLabels(this.labelNames, values)} ${formatValue(sum)}`);
      lines.push(`${this.name}_count${renderLabels(this.labelNames, values)} ${count}`);
    }
    return lines;
  }
}

export type AnyMetric = Counter<string> | Gauge<string> | Histogram<string>;

export class Registry {
  private readonly metrics = new Map<string, AnyMetric>();

  register<M extends AnyMetric>(metric: M): M {
    if (this.metrics.has(metric.name)) throw new Error(`metric ${metric.name} registered twice`);
    this.metrics.set(metric.name, metric);
    return metric;
  }

  /** Every metric in registration order, in the text format (ends with a newline, as required). */
  render(): string {
    return `${[...this.metrics.values()].map((m) => m.render()).join('\n')}\n`;
  }
}
