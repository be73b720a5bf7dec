'use client';
/**
 * The job queue, live: newest first, filtered by state, host and bulk (kept in the URL so a link
 * from a host or a bulk opens the right view), keyset-paginated by the server.
 */
import { keepPreviousData, useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { usePathname, useRouter, useSearchParams } from 'next/navigation';
import { Suspense, useState } from 'react';
import { JobTable } from '../components/job-table';
import { Pager, useCursorPager } from '../components/pager';
import { useCan } from '../components/shell';
import { Empty, ErrorState, Loading } from '../components/states';
import { api, LIVE_MS, type RouterInputs } from '../lib/api';
import { ACTIVE_STATES, JOB_STATES, type JobStateName } from './job-format';
import styles from './jobs.module.css';

type ListInput = RouterInputs['jobs']['list'] & object;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function statesOf(value: string): JobStateName[] | undefined {
  if (value === 'active') return [...ACTIVE_STATES];
  const state = JOB_STATES.find((s) => s === value);
  return state === undefined ? undefined : [state];
}

export default function JobsPage() {
  return (
    <Suspense fallback={<Loading what="Loading jobs" />}>
      <JobsQueue />
    </Suspense>
  );
}

function JobsQueue() {
  const router = useRouter();
  const pathname = usePathname();
  const params = useSearchParams();
  const canOperate = useCan('operator');
  const stateParam = params.get('state') ?? '';
  const hostParam = params.get('hostId') ?? '';
  const bulkParam = params.get('bulkId') ?? '';
  const hostId = UUID.test(hostParam) ? hostParam : undefined;
  const bulkId = UUID.test(bulkParam) ? bulkParam : undefined;
  const pager = useCursorPager();
  const [hostSearch, setHostSearch] = useState('');

  const setParam = (name: string, value: string) => {
    const next = new URLSearchParams(params.toString());
    if (value === '') next.delete(name);
    else next.set(name, value);
    pager.reset();
    const query = next.toString();
    router.replace(query === '' ? pathname : `${pathname}?${query}`);
  };

  const input: ListInput = {
    state: statesOf(stateParam),
    hostId,
    bulkId,
    limit: 50,
    cursor: pager.cursor,
  };
  const jobs = useQuery({
    queryKey: ['jobs.list', input],
    queryFn: () => api.jobs.list.query(input),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });
  // The host picker searches the server (a fleet has thousands of hosts): at most 20 choices.
  const hostInput = { search: hostSearch.trim() || undefined, limit: 20 };
  const hosts = useQuery({
    queryKey: ['hosts.list', hostInput],
    queryFn: () => api.hosts.list.query(hostInput),
    placeholderData: keepPreviousData,
  });
  const hostChoices = hosts.data?.items ?? [];
  const selectedHostName = jobs.data?.items.find((j) => j.hostId === hostId)?.hostname;

  return (
    <>
      <div className="row">
        <h1 className={styles.h1}>Jobs</h1>
        <span className="spacer" />
        {canOperate ? (
          <Link href="/jobs/bulk" className="btn">
            Bulk rebind
          </Link>
        ) : null}
      </div>
      <search className="toolbar" aria-label="Filter jobs">
        <label>
          State
          <select value={stateParam} onChange={(e) => setParam('state', e.target.value)}>
            <option value="">Any</option>
            <option value="active">Active (queued, dispatched, running)</option>
            {JOB_STATES.map((s) => (
              <option key={s} value={s}>
                {s.replace('_', ' ')}
              </option>
            ))}
          </select>
        </label>
        <label>
          Find host
          <input
            type="search"
            value={hostSearch}
            placeholder="hostname"
            onChange={(e) => setHostSearch(e.target.value)}
          />
        </label>
        <label>
          Host
          <select value={hostId ?? ''} onChange={(e) => setParam('hostId', e.target.value)}>
            <option value="">Any host</option>
            {hostId !== undefined && !hostChoices.some((h) => h.id === hostId) ? (
              <option value={hostId}>{selectedHostName ?? hostId}</option>
            ) : null}
            {hostChoices.map((h) => (
              <option key={h.id} value={h.id}>
                {h.hostname}
              </option>
            ))}
          </select>
        </label>
        {bulkId === undefined ? null : (
          <p className={styles.bulk}>
            Bulk <span className="mono">{bulkId.slice(0, 8)}</span>{' '}
            <button type="button" className="btn btn-small" onClick={() => setParam('bulkId', '')}>
              Show all jobs
            </button>
          </p>
        )}
      </search>
      {jobs.isPending ? (
        <Loading what="Loading jobs" />
      ) : jobs.isError ? (
        <ErrorState error={jobs.error} retry={() => jobs.refetch()} />
      ) : jobs.data.items.length === 0 ? (
        <Empty>
          {input.state !== undefined || hostId !== undefined || bulkId !== undefined
            ? 'No job matches these filters.'
            : 'No jobs yet. Rebind a group from a host page, or start a bulk rebind.'}
        </Empty>
      ) : (
        <>
          <JobTable jobs={jobs.data.items} caption="Job queue" />
          <Pager
            page={pager.page}
            nextCursor={jobs.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
    </>
  );
}
