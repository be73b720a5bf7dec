'use client';
/**
 * Devices: fleet-wide search. Every filter lives in the URL (/devices?status=blocked&type=15b3:101e),
 * the server filters and pages (keyset cursors, at most 200 rows a page), so this works the same at
 * 300,000 devices as at 30.
 */
import { useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { type ChangeEvent, type FormEvent, Suspense } from 'react';
import { DEVICE_STATUSES, StatusBadge, statusLabel } from '../components/badges';
import { HolderText } from '../components/holder';
import { Pager, useCursorPager } from '../components/pager';
import { Empty, ErrorState, Loading } from '../components/states';
import { api, LIVE_MS, type RouterInputs, type RouterOutputs } from '../lib/api';
import styles from './devices.module.css';
import { parseLabels, parseType } from './filters';
import { deviceTypeName } from './names';
import { reasonTitle } from './reason-titles';
import { type FilterValues, useUrlFilters } from './use-url-filters';

type SearchInput = RouterInputs['devices']['search'];
type Row = RouterOutputs['devices']['search']['items'][number];

const PAGE_SIZES = [50, 100, 200] as const;
/** The URL parameters this page reads; everything else is ignored. */
const PARAMS = [
  'q',
  'type',
  'driver',
  'status',
  'reason',
  'label',
  'host',
  'hostId',
  'size',
] as const;
type Params = FilterValues<(typeof PARAMS)[number]>;

export default function DevicesPage() {
  return (
    <>
      <h1>Devices</h1>
      <Suspense fallback={<Loading what="Loading devices" />}>
        <Devices />
      </Suspense>
    </>
  );
}

function Devices() {
  const { applied: params, urlKey, draft, apply, field } = useUrlFilters(PARAMS);
  const onSubmit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    apply(draft);
  };
  // Selects apply at once: there is nothing more to type.
  const applyNow = (name: 'status' | 'size') => (event: ChangeEvent<HTMLSelectElement>) =>
    apply({ ...draft, [name]: event.currentTarget.value });

  return (
    <>
      <form className="toolbar" onSubmit={onSubmit} aria-label="Device filters">
        <label>
          Search
          <input
            {...field('q')}
            type="search"
            placeholder="name, ids, address, class, VM"
            size={26}
          />
        </label>
        <label>
          Type (vendor:device)
          <input {...field('type')} placeholder="15b3:101e" size={11} />
        </label>
        <label>
          Driver
          <input {...field('driver')} placeholder="nvidia" size={12} />
        </label>
        <label>
          Status
          <select {...field('status')} onChange={applyNow('status')}>
            <option value="">any</option>
            {DEVICE_STATUSES.map((s) => (
              <option key={s} value={s}>
                {statusLabel(s)}
              </option>
            ))}
          </select>
        </label>
        <label>
          Label (key=value)
          <input {...field('label')} placeholder="rack=r01" size={14} />
        </label>
        <label>
          Host name
          <input {...field('host')} placeholder="contains" size={14} />
        </label>
        <label>
          Per page
          <select {...field('size')} value={draft.size ?? '50'} onChange={applyNow('size')}>
            {PAGE_SIZES.map((n) => (
              <option key={n} value={String(n)}>
                {n}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="btn btn-primary">
          Search
        </button>
        <button type="button" className="btn" onClick={() => apply({})} disabled={urlKey === ''}>
          Clear filters
        </button>
      </form>
      <ActiveFilters params={params} onRemove={(name) => apply({ ...params, [name]: undefined })} />
      <Results key={urlKey} params={params} />
    </>
  );
}

/** Filters that have no field of their own (a reason or a host from a link), removable. */
function ActiveFilters({
  params,
  onRemove,
}: {
  params: Params;
  onRemove: (name: 'reason' | 'hostId') => void;
}) {
  if (params.reason === undefined && params.hostId === undefined) return null;
  return (
    <p className="row small">
      {params.reason === undefined ? null : (
        <span className={styles.chip}>
          First reason: {reasonTitle(params.reason)} <code>{params.reason}</code>
          <button type="button" className="btn btn-small" onClick={() => onRemove('reason')}>
            Remove reason filter
          </button>
        </span>
      )}
      {params.hostId === undefined ? null : (
        <span className={styles.chip}>
          One host: <Link href={`/hosts/${params.hostId}`}>open host</Link>
          <button type="button" className="btn btn-small" onClick={() => onRemove('hostId')}>
            Remove host filter
          </button>
        </span>
      )}
    </p>
  );
}

/** The API input of the URL's filters, or the message for the first one that does not parse. */
function toInput(params: Params): { input: Omit<SearchInput, 'cursor'> } | { error: string } {
  const type = parseType(params.type ?? '');
  if ('error' in type) return { error: type.error };
  const labels = parseLabels(params.label ?? '');
  if ('error' in labels) return { error: labels.error };
  const status = DEVICE_STATUSES.find((s) => s === params.status);
  const size = PAGE_SIZES.find((n) => String(n) === params.size) ?? 50;
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  if (params.hostId !== undefined && !uuid.test(params.hostId)) {
    return { error: 'the host in the link is not a host id' };
  }
  if (params.reason !== undefined && !/^[a-z0-9-]{1,64}$/.test(params.reason)) {
    return { error: `"${params.reason}" is not a reason code` };
  }
  return {
    input: {
      q: params.q,
      ...type,
      driver: params.driver,
      status,
      reason: params.reason,
      labels: Object.keys(labels.labels).length === 0 ? undefined : labels.labels,
      hostSearch: params.host,
      hostId: params.hostId,
      limit: size,
    },
  };
}

function Results({ params }: { params: Params }) {
  const pager = useCursorPager();
  const parsed = toInput(params);
  const input = 'input' in parsed ? { ...parsed.input, cursor: pager.cursor } : null;
  const query = useQuery({
    queryKey: ['devices.search', input],
    queryFn: () => api.devices.search.query(input ?? { limit: 50 }),
    enabled: input !== null,
    refetchInterval: LIVE_MS,
    placeholderData: (previous) => previous,
  });
  if ('error' in parsed) {
    return (
      <p className="callout-warn" role="alert">
        Fix the filter: {parsed.error}.
      </p>
    );
  }
  if (query.isPending) return <Loading what="Searching devices" />;
  if (query.isError) return <ErrorState error={query.error} retry={() => query.refetch()} />;
  const { items, nextCursor } = query.data;
  if (items.length === 0 && pager.page === 1) {
    return <Empty>No device matches these filters.</Empty>;
  }
  return (
    <>
      <div className="table-wrap">
        <table>
          <caption className={styles.caption}>
            Devices, page {pager.page} ({items.length} shown, ordered by host and address)
          </caption>
          <thead>
            <tr>
              <th scope="col">Host</th>
              <th scope="col">Address</th>
              <th scope="col">Name</th>
              <th scope="col">Class</th>
              <th scope="col">Driver</th>
              <th scope="col">vfio driver</th>
              <th scope="col" className="num">
                NUMA
              </th>
              <th scope="col">Status</th>
              <th scope="col">Reason</th>
            </tr>
          </thead>
          <tbody>
            {items.map((d) => (
              <DeviceRow key={`${d.hostId}/${d.address}`} device={d} />
            ))}
          </tbody>
        </table>
      </div>
      <Pager page={pager.page} nextCursor={nextCursor} onNext={pager.next} onPrev={pager.prev} />
    </>
  );
}

function DeviceRow({ device: d }: { device: Row }) {
  const reason = d.reasons[0];
  return (
    <tr>
      <td className={styles.nowrap}>
        <Link href={`/hosts/${d.hostId}`}>{d.hostname}</Link>
        {d.hostState === 'online' ? null : <span className="muted small"> ({d.hostState})</span>}
      </td>
      <td className={`mono ${styles.nowrap}`}>{d.address}</td>
      <td className={styles.name}>
        <div>{deviceTypeName(d)}</div>
        <div className="mono muted">
          {d.vendorId}:{d.deviceId}
        </div>
      </td>
      <td className="small">{d.className ?? d.classCode}</td>
      <td className={`mono ${styles.nowrap}`}>{d.driver ?? <span className="muted">none</span>}</td>
      <td className={`mono ${styles.nowrap}`}>
        {d.vfioDriver ?? <span className="muted">—</span>}
      </td>
      <td className="num">{d.numaNode ?? '—'}</td>
      <td>
        <StatusBadge status={d.status} />
        {d.inUse ? (
          <div className="small">
            <HolderText holder={d.holder} />
          </div>
        ) : null}
      </td>
      <td className={`small ${styles.reason}`}>
        {reason === undefined ? (
          <span className="muted">—</span>
        ) : (
          <>
            <strong>{reasonTitle(reason.code)}</strong>
            <span className={styles.message} title={reason.message}>
              {reason.message}
            </span>
          </>
        )}
      </td>
    </tr>
  );
}
