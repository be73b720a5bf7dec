'use client';
/**
 * Hosts: the fleet's hosts, searched, filtered and sorted by the server (keyset pages), with each
 * host's device counts by status. Polls, so hosts coming and going show without a reload.
 */
import { keepPreviousData, useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { useState } from 'react';
import { AgentVersion, HostStateBadge, ReadOnlyBadge } from '../components/badges';
import { Pager, useCursorPager } from '../components/pager';
import { RelativeTime } from '../components/relative-time';
import { Empty, ErrorState, Loading } from '../components/states';
import { api, LIVE_MS, type RouterInputs, type RouterOutputs } from '../lib/api';
import { Distinguisher } from './distinguisher';
import styles from './hosts.module.css';
import { Labels } from './labels';

type ListInput = RouterInputs['hosts']['list'] & object;
type AgentVersions = RouterOutputs['fleet']['agentVersions'];
type Sort = 'hostname' | 'lastSeen' | 'devices';
type Dir = 'asc' | 'desc';

/** `rack=r01, role=gpu` → { rack: 'r01', role: 'gpu' }; anything not key=value is ignored. */
function parseLabels(text: string): Record<string, string> | undefined {
  const labels: Record<string, string> = {};
  for (const part of text.split(/[,\s]+/)) {
    const eq = part.indexOf('=');
    if (eq > 0 && eq < part.length - 1) labels[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return Object.keys(labels).length > 0 ? labels : undefined;
}

function SortHeader({
  label,
  column,
  sort,
  dir,
  onSort,
  className,
}: {
  label: string;
  column: Sort;
  sort: Sort;
  dir: Dir;
  onSort: (column: Sort) => void;
  className?: string;
}) {
  const active = sort === column;
  return (
    <th
      scope="col"
      className={className}
      aria-sort={active ? (dir === 'asc' ? 'ascending' : 'descending') : 'none'}
    >
      <button type="button" className="sort" onClick={() => onSort(column)}>
        {label}
        <span aria-hidden="true">{active ? (dir === 'asc' ? ' ▲' : ' ▼') : ' ↕'}</span>
      </button>
    </th>
  );
}

export default function HostsPage() {
  const [search, setSearch] = useState('');
  const [state, setState] = useState<'' | 'online' | 'offline'>('');
  const [labelText, setLabelText] = useState('');
  const [sort, setSort] = useState<Sort>('hostname');
  const [dir, setDir] = useState<Dir>('asc');
  const pager = useCursorPager();

  const input: ListInput = {
    search: search.trim() === '' ? undefined : search.trim(),
    state: state === '' ? undefined : state,
    labels: parseLabels(labelText),
    sort,
    dir,
    limit: 50,
    cursor: pager.cursor,
  };
  const hosts = useQuery({
    queryKey: ['hosts.list', input],
    queryFn: () => api.hosts.list.query(input),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });

  const onSort = (column: Sort) => {
    if (column === sort) setDir(dir === 'asc' ? 'desc' : 'asc');
    else {
      setSort(column);
      // Most recent and biggest first is what people look for; names read A to Z.
      setDir(column === 'hostname' ? 'asc' : 'desc');
    }
    pager.reset();
  };

  return (
    <>
      <h1>Hosts</h1>
      <AgentVersionsPanel />
      <search className="toolbar" aria-label="Filter hosts">
        <label>
          Search hostname
          <input
            type="search"
            value={search}
            placeholder="e.g. gpu-07"
            onChange={(e) => {
              setSearch(e.target.value);
              pager.reset();
            }}
          />
        </label>
        <label>
          State
          <select
            value={state}
            onChange={(e) => {
              const v = e.target.value;
              setState(v === 'online' || v === 'offline' ? v : '');
              pager.reset();
            }}
          >
            <option value="">Any</option>
            <option value="online">Online</option>
            <option value="offline">Offline</option>
          </select>
        </label>
        <label>
          Labels (key=value)
          <input
            type="text"
            value={labelText}
            placeholder="rack=r01, role=gpu"
            onChange={(e) => {
              setLabelText(e.target.value);
              pager.reset();
            }}
          />
        </label>
      </search>
      {hosts.isPending ? (
        <Loading what="Loading hosts" />
      ) : hosts.isError ? (
        <ErrorState error={hosts.error} retry={() => hosts.refetch()} />
      ) : hosts.data.items.length === 0 ? (
        <Empty>
          {input.search !== undefined || input.state !== undefined || input.labels !== undefined
            ? 'No host matches these filters.'
            : 'No hosts yet: enroll an agent (Enrollment) and it shows up here.'}
        </Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className={styles.caption}>Hosts</caption>
              <thead>
                <tr>
                  <SortHeader label="Hostname" column="hostname" {...{ sort, dir, onSort }} />
                  <th scope="col">State</th>
                  <th scope="col">Kernel</th>
                  <th scope="col">IOMMU</th>
                  <th scope="col">Labels</th>
                  <SortHeader
                    label="Devices"
                    column="devices"
                    className="num"
                    {...{ sort, dir, onSort }}
                  />
                  <th scope="col" className="num">
                    Bound
                  </th>
                  <th scope="col" className="num">
                    Ready
                  </th>
                  <th scope="col" className="num">
                    Blocked
                  </th>
                  <SortHeader label="Last seen" column="lastSeen" {...{ sort, dir, onSort }} />
                  {/* Last, so the columns before it keep their places for those who know them. */}
                  <th scope="col">Agent</th>
                  {/* New columns go after it, for the same reason. */}
                  <th scope="col" className="num">
                    In use
                  </th>
                  <th scope="col">Rebinding</th>
                </tr>
              </thead>
              <tbody>
                {hosts.data.items.map((h) => (
                  <tr key={h.id}>
                    <td>
                      <Link href={`/hosts/${h.id}`}>{h.hostname}</Link>
                      {h.distinguisher === null ? null : ' '}
                      <Distinguisher value={h.distinguisher} small />
                      {h.problemCount > 0 ? (
                        <span className="muted small">
                          {' '}
                          ({h.problemCount} problem{h.problemCount === 1 ? '' : 's'})
                        </span>
                      ) : null}
                    </td>
                    <td>
                      <HostStateBadge state={h.state} />
                    </td>
                    <td className="mono">{h.kernelRelease ?? '—'}</td>
                    <td>
                      {h.iommuEnabled ? (
                        <span className={styles.on}>on</span>
                      ) : (
                        <span className={styles.off}>off</span>
                      )}
                    </td>
                    <td>
                      <Labels labels={h.labels} />
                    </td>
                    <td className="num">{h.devices.total}</td>
                    <td className="num">{h.devices.bound}</td>
                    <td className="num">{h.devices.ready}</td>
                    <td className="num">{h.devices.blocked}</td>
                    <td>
                      <RelativeTime iso={h.lastSeenAt} />
                    </td>
                    <td>
                      <AgentVersion version={h.agentVersion} status={h.agentVersionStatus} />
                    </td>
                    <td className="num">{h.devices.inUse}</td>
                    <td>
                      {h.allowRebind === true ? (
                        <span className="muted">allowed</span>
                      ) : (
                        <ReadOnlyBadge allowRebind={h.allowRebind} />
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={pager.page}
            nextCursor={hosts.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
    </>
  );
}

/** Hosts per agent version, and the outdated ones (older than the agent this server ships). */
function AgentVersionsPanel() {
  const versions = useQuery({
    queryKey: ['fleet.agentVersions'],
    queryFn: () => api.fleet.agentVersions.query(),
    refetchInterval: LIVE_MS,
  });
  if (versions.isPending) return <Loading what="Loading agent versions" />;
  if (versions.isError) {
    return <ErrorState error={versions.error} retry={() => versions.refetch()} />;
  }
  const data: AgentVersions = versions.data;
  if (data.hosts === 0) return null;
  return (
    <section className={`card ${styles.versions}`} aria-labelledby="agent-versions-title">
      <h2 id="agent-versions-title" className={styles.versionsTitle}>
        Agent versions
      </h2>
      <p className="small">
        This server ships agent <span className="mono">{data.current}</span>.{' '}
        {data.outdated === 0 ? (
          <span>No host runs an outdated agent.</span>
        ) : (
          <strong>
            {data.outdated} host{data.outdated === 1 ? '' : 's'} run{data.outdated === 1 ? 's' : ''}{' '}
            an outdated agent.
          </strong>
        )}
      </p>
      <table className={styles.versionsTable}>
        <caption className={styles.caption}>Agent versions in the fleet</caption>
        <thead>
          <tr>
            <th scope="col">Version</th>
            <th scope="col" className="num">
              Hosts
            </th>
            <th scope="col" className="num">
              Online
            </th>
          </tr>
        </thead>
        <tbody>
          {data.versions.map((v) => (
            <tr key={v.version ?? '(none)'}>
              <td>
                <AgentVersion version={v.version} status={v.status} />
              </td>
              <td className="num">{v.hosts}</td>
              <td className="num">{v.online}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
