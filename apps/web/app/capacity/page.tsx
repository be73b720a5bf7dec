'use client';
/**
 * Capacity planning: "how many of this device can I hand to VMs today, and where?" Per device type
 * (pci.ids names and ids): total, bound to vfio, ready now, blocked, SR-IOV VF headroom; filtered
 * by host label and host name, split by NUMA node and by one label's values; a bar chart of the
 * same numbers; CSV of the table. One server aggregate per view (fleet.capacity), polled.
 */
import { useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { type FormEvent, Suspense } from 'react';
import { StackedBarChart, type StackedBarRow } from '../components/charts';
import { Empty, ErrorState, Loading } from '../components/states';
import { parseLabels } from '../devices/filters';
import { deviceTypeName } from '../devices/names';
import { useUrlFilters } from '../devices/use-url-filters';
import { api, LIVE_MS, type RouterOutputs } from '../lib/api';
import styles from './capacity.module.css';
import { CAPACITY_CSV_FILENAME, capacityCsv, downloadText } from './csv';

type Capacity = RouterOutputs['fleet']['capacity'];
type CapacityType = Capacity['types'][number];

const PARAMS = ['label', 'host', 'split', 'numa'] as const;

/** The chart shows the largest types; the table below always has all of them. */
const CHART_TYPES = 15;
const COLORS = {
  inUse: 'var(--in-use)',
  bound: 'var(--bound)',
  ready: 'var(--ready)',
  blocked: 'var(--blocked)',
};

export default function CapacityPage() {
  return (
    <>
      <h1>Capacity planning</h1>
      <Suspense fallback={<Loading what="Loading capacity" />}>
        <CapacityView />
      </Suspense>
    </>
  );
}

function CapacityView() {
  const { applied: params, urlKey, draft, apply, field } = useUrlFilters(PARAMS);

  const labels = parseLabels(params.label ?? '');
  const byNuma = params.numa === '1';
  const input =
    'error' in labels
      ? null
      : {
          labels: Object.keys(labels.labels).length === 0 ? undefined : labels.labels,
          hostSearch: params.host,
          groupBy: byNuma ? ('numa' as const) : ('type' as const),
          labelKey: params.split,
        };
  const capacity = useQuery({
    queryKey: ['fleet.capacity', input],
    queryFn: () => api.fleet.capacity.query(input ?? {}),
    enabled: input !== null,
    refetchInterval: LIVE_MS,
    placeholderData: (previous) => previous,
  });
  const labelKeys = useQuery({
    queryKey: ['fleet.labelKeys'],
    queryFn: () => api.fleet.labelKeys.query(),
    refetchInterval: LIVE_MS * 15,
  });

  const onSubmit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    apply(draft);
  };

  const keys = labelKeys.data ?? [];
  // A key from the URL that no host carries (any more) stays selectable, so the select shows it.
  const splitKeys =
    params.split === undefined || keys.some((k) => k.key === params.split)
      ? keys.map((k) => k.key)
      : [params.split, ...keys.map((k) => k.key)];

  return (
    <>
      <form className="toolbar" onSubmit={onSubmit} aria-label="Capacity filters">
        <label>
          Label (key=value)
          <input {...field('label')} placeholder="rack=r01, role=gpu" />
        </label>
        <label>
          Host name
          <input {...field('host')} placeholder="contains" size={14} />
        </label>
        <label>
          Split by label
          <select
            {...field('split')}
            onChange={(e) => apply({ ...draft, split: e.currentTarget.value })}
          >
            <option value="">none</option>
            {splitKeys.map((k) => (
              <option key={k} value={k}>
                {k}
              </option>
            ))}
          </select>
        </label>
        <label className={styles.checkbox}>
          <input
            type="checkbox"
            name="numa"
            checked={draft.numa === '1'}
            onChange={(e) => apply({ ...draft, numa: e.currentTarget.checked ? '1' : undefined })}
          />
          Split by NUMA node
        </label>
        <button type="submit" className="btn btn-primary">
          Apply
        </button>
        <button type="button" className="btn" onClick={() => apply({})} disabled={urlKey === ''}>
          Clear filters
        </button>
        <span className="spacer" />
        <button
          type="button"
          className="btn"
          disabled={capacity.data === undefined || capacity.data.types.length === 0}
          onClick={() => {
            if (capacity.data !== undefined) {
              downloadText(CAPACITY_CSV_FILENAME, capacityCsv(capacity.data.types));
            }
          }}
        >
          Download CSV
        </button>
      </form>
      {'error' in labels ? (
        <p className="callout-warn" role="alert">
          Fix the label filter: {labels.error}.
        </p>
      ) : capacity.isPending ? (
        <Loading what="Loading capacity" />
      ) : capacity.isError ? (
        <ErrorState error={capacity.error} retry={() => capacity.refetch()} />
      ) : capacity.data.types.length === 0 ? (
        <Empty>
          {urlKey === ''
            ? 'No devices yet: no host has reported an inventory.'
            : 'No devices on hosts matching these filters.'}
        </Empty>
      ) : (
        <CapacityReport capacity={capacity.data} split={params.split} byNuma={byNuma} />
      )}
    </>
  );
}

function CapacityReport({
  capacity,
  split,
  byNuma,
}: {
  capacity: Capacity;
  split: string | undefined;
  byNuma: boolean;
}) {
  const { totals, types } = capacity;
  const chartRows: StackedBarRow[] = types.slice(0, CHART_TYPES).map((t) => ({
    key: `${t.vendorId}:${t.deviceId}`,
    label: deviceTypeName(t),
    sublabel: `${t.vendorId}:${t.deviceId}`,
    // Readiness partitions the devices: in use + bound (on vfio, free) + ready + blocked = total.
    segments: [
      { label: 'in use', value: t.inUse, color: COLORS.inUse },
      {
        label: 'bound',
        value: Math.max(0, t.total - t.ready - t.blocked - t.inUse),
        color: COLORS.bound,
      },
      { label: 'ready', value: t.ready, color: COLORS.ready },
      { label: 'blocked', value: t.blocked, color: COLORS.blocked },
    ],
  }));
  return (
    <>
      <section aria-labelledby="totals-heading">
        <h2 id="totals-heading">Totals</h2>
        <div className="grid">
          <Total label="devices" value={totals.total} />
          <Total label="bound to vfio" value={totals.bound} tone={styles.bound} />
          <Total label="in use by a VM" value={totals.inUse} tone={styles.inUse} />
          <Total label="ready now" value={totals.ready} tone={styles.ready} />
          <Total label="blocked" value={totals.blocked} tone={styles.blocked} />
          <Total label="SR-IOV VF headroom" value={totals.vfHeadroom} />
        </div>
      </section>
      <section aria-labelledby="chart-heading" className="card">
        <h2 id="chart-heading" className={styles.flushHeading}>
          Readiness by device type
        </h2>
        <p className="small muted">
          Each bar is one device type's devices: in use (held by a VM), bound (on vfio and free),
          ready (nothing blocks moving its IOMMU group to vfio) and blocked.
          {types.length > CHART_TYPES
            ? ` The ${CHART_TYPES} most numerous of ${types.length} types; all are in the table below.`
            : ''}
        </p>
        <StackedBarChart
          title="Devices by readiness, per device type"
          description={chartRows
            .map(
              (r) =>
                `${r.label} (${r.sublabel}): ${r.segments.map((s) => `${s.value} ${s.label}`).join(', ')}`,
            )
            .join('; ')}
          rows={chartRows}
          legend={[
            { label: 'in use', color: COLORS.inUse },
            { label: 'bound', color: COLORS.bound },
            { label: 'ready', color: COLORS.ready },
            { label: 'blocked', color: COLORS.blocked },
          ]}
        />
      </section>
      <section aria-labelledby="types-heading">
        <h2 id="types-heading">By device type</h2>
        <TypeTable types={types} />
      </section>
      {split === undefined ? null : (
        <section aria-labelledby="split-label-heading">
          <h2 id="split-label-heading">By label {split}</h2>
          <SplitTable
            caption={`Capacity by device type and label ${split}`}
            column={split}
            types={types}
            rowsOf={(t) =>
              (t.byLabel ?? []).map((l) => ({
                key: l.value ?? '\u0000none',
                label: l.value ?? `(no ${split} label)`,
                counts: l,
              }))
            }
          />
        </section>
      )}
      {byNuma ? (
        <section aria-labelledby="split-numa-heading">
          <h2 id="split-numa-heading">By NUMA node</h2>
          <SplitTable
            caption="Capacity by device type and NUMA node"
            column="NUMA node"
            types={types}
            rowsOf={(t) =>
              (t.byNuma ?? []).map((n) => ({
                key: String(n.numaNode),
                label: n.numaNode === null ? 'none reported' : `node ${n.numaNode}`,
                counts: n,
              }))
            }
          />
        </section>
      ) : null}
    </>
  );
}

function Total({ label, value, tone }: { label: string; value: number; tone?: string }) {
  return (
    <div className="stat">
      <div className={`value ${tone ?? ''}`}>{value.toLocaleString('en')}</div>
      <div className="label">{label}</div>
    </div>
  );
}

function TypeCell({ t }: { t: CapacityType }) {
  return (
    <>
      <Link href={`/devices?type=${t.vendorId}:${t.deviceId}`}>{deviceTypeName(t)}</Link>
      <div className="mono muted">
        {t.vendorId}:{t.deviceId}
      </div>
    </>
  );
}

function TypeTable({ types }: { types: CapacityType[] }) {
  return (
    <div className="table-wrap">
      <table>
        <caption className={styles.srOnly}>Capacity by device type</caption>
        <thead>
          <tr>
            <th scope="col">Device type</th>
            <th scope="col">Class</th>
            <th scope="col" className="num">
              Hosts
            </th>
            <th scope="col" className="num">
              Total
            </th>
            <th scope="col" className="num">
              Bound to vfio
            </th>
            <th scope="col" className="num">
              Ready now
            </th>
            <th scope="col" className="num">
              Blocked
            </th>
            <th scope="col" className="num">
              VF headroom
            </th>
          </tr>
        </thead>
        <tbody>
          {types.map((t) => (
            <tr key={`${t.vendorId}:${t.deviceId}`}>
              <th scope="row" className={styles.rowHeader}>
                <TypeCell t={t} />
              </th>
              <td className="small">{t.className ?? '—'}</td>
              <td className="num">{t.hosts}</td>
              <td className="num">{t.total}</td>
              <td className="num">{t.bound}</td>
              <td className="num">
                {t.ready === 0 ? (
                  0
                ) : (
                  <Link href={`/devices?type=${t.vendorId}:${t.deviceId}&status=ready`}>
                    {t.ready}
                  </Link>
                )}
              </td>
              <td className="num">
                {t.blocked === 0 ? (
                  0
                ) : (
                  <Link href={`/devices?type=${t.vendorId}:${t.deviceId}&status=blocked`}>
                    {t.blocked}
                  </Link>
                )}
              </td>
              <td className="num">{t.vfHeadroom === 0 ? '—' : t.vfHeadroom}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface SplitRow {
  key: string;
  label: string;
  counts: {
    total: number;
    bound: number;
    ready: number;
    blocked: number;
    inUse: number;
    vfHeadroom: number;
  };
}

function SplitTable({
  caption,
  column,
  types,
  rowsOf,
}: {
  caption: string;
  column: string;
  types: CapacityType[];
  rowsOf: (t: CapacityType) => SplitRow[];
}) {
  return (
    <div className="table-wrap">
      <table>
        <caption className={styles.srOnly}>{caption}</caption>
        <thead>
          <tr>
            <th scope="col">Device type</th>
            <th scope="col">{column}</th>
            <th scope="col" className="num">
              Total
            </th>
            <th scope="col" className="num">
              Bound to vfio
            </th>
            <th scope="col" className="num">
              Ready now
            </th>
            <th scope="col" className="num">
              Blocked
            </th>
            <th scope="col" className="num">
              VF headroom
            </th>
          </tr>
        </thead>
        {types.map((t) => {
          const rows = rowsOf(t);
          return (
            // One row group per type, so the type's header cell spans its split rows.
            <tbody key={`${t.vendorId}:${t.deviceId}`} className={styles.group}>
              {rows.map((r, i) => (
                <tr key={r.key}>
                  {i === 0 ? (
                    <th scope="rowgroup" rowSpan={rows.length} className={styles.rowHeader}>
                      <TypeCell t={t} />
                    </th>
                  ) : null}
                  <td>{r.label}</td>
                  <td className="num">{r.counts.total}</td>
                  <td className="num">{r.counts.bound}</td>
                  <td className="num">{r.counts.ready}</td>
                  <td className="num">{r.counts.blocked}</td>
                  <td className="num">{r.counts.vfHeadroom === 0 ? '—' : r.counts.vfHeadroom}</td>
                </tr>
              ))}
            </tbody>
          );
        })}
      </table>
    </div>
  );
}
