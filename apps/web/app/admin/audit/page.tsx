'use client';
/**
 * The audit log (operators and admins): who did what, on which host, group and device, newest
 * first, keyset-paginated by the server, filtered by action and host. The filters live in the URL
 * (`?action=job-finished&host=<id>`) so a filtered view can be linked, e.g. from a host page.
 */
import { keepPreviousData, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { usePathname, useRouter, useSearchParams } from 'next/navigation';
import { type FormEvent, type ReactNode, Suspense, useEffect, useId, useState } from 'react';
import { JobStateBadge } from '../../components/badges';
import { Pager, useCursorPager } from '../../components/pager';
import { formatAbsolute, RelativeTime } from '../../components/relative-time';
import { useCan } from '../../components/shell';
import { Empty, ErrorState, Loading } from '../../components/states';
import { api, errorText, LIVE_MS, type RouterOutputs } from '../../lib/api';
import styles from '../admin.module.css';

type Entry = RouterOutputs['audit']['list']['items'][number];

/** Every action the server records, in the words the filter shows. */
const ACTIONS: { value: string; text: string }[] = [
  { value: 'job-created', text: 'Job created' },
  { value: 'job-finished', text: 'Job finished' },
  { value: 'bulk-created', text: 'Bulk rebind created' },
  { value: 'job-cancel-requested', text: 'Job cancel requested' },
  { value: 'job-cancelled', text: 'Job cancelled' },
  { value: 'token-created', text: 'Enrollment token created' },
  { value: 'token-revoked', text: 'Enrollment token revoked' },
  { value: 'agent-revoked', text: 'Agent revoked' },
  { value: 'user-created', text: 'User created' },
  { value: 'user-role-changed', text: 'User role changed' },
  { value: 'user-disabled', text: 'User disabled' },
  { value: 'password-changed', text: 'Password changed' },
];

const ACTION_TEXT = new Map(ACTIONS.map((a) => [a.value, a.text]));

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export default function AuditPage() {
  const canRead = useCan('operator');
  return (
    <>
      <h1>Audit log</h1>
      {canRead ? (
        // useSearchParams needs a Suspense boundary.
        <Suspense fallback={<Loading what="Loading the audit log" />}>
          <AuditView />
        </Suspense>
      ) : (
        <ErrorState error={new Error('The audit log is for operators and admins.')} />
      )}
    </>
  );
}

function AuditView() {
  const params = useSearchParams();
  const router = useRouter();
  const pathname = usePathname();
  const pager = useCursorPager();
  const action = params.get('action') ?? '';
  const hostParam = params.get('host') ?? '';
  const hostId = UUID.test(hostParam) ? hostParam : '';

  const setFilters = (next: { action: string; hostId: string }) => {
    const query = new URLSearchParams();
    if (next.action !== '') query.set('action', next.action);
    if (next.hostId !== '') query.set('host', next.hostId);
    const qs = query.toString();
    pager.reset();
    router.replace(qs === '' ? pathname : `${pathname}?${qs}`);
  };

  const audit = useQuery({
    queryKey: ['audit.list', action, hostId, pager.cursor],
    queryFn: () =>
      api.audit.list.query({
        limit: 50,
        cursor: pager.cursor,
        action: action === '' ? undefined : action,
        hostId: hostId === '' ? undefined : hostId,
      }),
    refetchInterval: LIVE_MS,
    placeholderData: keepPreviousData,
  });

  return (
    <>
      <Filters action={action} hostId={hostId} onApply={setFilters} />
      {audit.isPending ? (
        <Loading what="Loading the audit log" />
      ) : audit.isError ? (
        <ErrorState error={audit.error} retry={() => audit.refetch()} />
      ) : audit.data.items.length === 0 && pager.page === 1 ? (
        <Empty>
          {action !== '' || hostId !== ''
            ? 'No entries match these filters.'
            : 'Nothing recorded yet: rebinds, enrollment and user changes will show here.'}
        </Empty>
      ) : (
        <>
          <div className="table-wrap">
            <table>
              <caption className={styles.visuallyHidden}>Audit log entries, newest first</caption>
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">User</th>
                  <th scope="col">Action</th>
                  <th scope="col">Host</th>
                  <th scope="col" className="num">
                    Group
                  </th>
                  <th scope="col">Device</th>
                  <th scope="col">Details</th>
                </tr>
              </thead>
              <tbody>
                {audit.data.items.map((entry) => (
                  <tr key={entry.id}>
                    <td>
                      <RelativeTime iso={entry.at} />
                      <div className="small muted">{formatAbsolute(entry.at)}</div>
                    </td>
                    <td>{entry.username ?? <span className="muted">system</span>}</td>
                    <td>
                      <span className="badge" title={entry.action}>
                        {ACTION_TEXT.get(entry.action) ?? entry.action}
                      </span>
                    </td>
                    <td>
                      {entry.hostId === null ? (
                        <span className="muted">—</span>
                      ) : entry.hostname !== null ? (
                        <Link href={`/hosts/${entry.hostId}`}>{entry.hostname}</Link>
                      ) : (
                        <span className="muted" title={entry.hostId}>
                          removed host
                        </span>
                      )}
                    </td>
                    <td className="num">{entry.iommuGroup ?? <span className="muted">—</span>}</td>
                    <td>
                      {entry.address === null ? (
                        <span className="muted">—</span>
                      ) : (
                        <span className="mono">{entry.address}</span>
                      )}
                    </td>
                    <td className={styles.details}>
                      <Details entry={entry} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <Pager
            page={pager.page}
            nextCursor={audit.data.nextCursor}
            onNext={pager.next}
            onPrev={pager.prev}
          />
        </>
      )}
    </>
  );
}

// --- filters ------------------------------------------------------------------------------------

/** `value`, once it has stopped changing for `ms`. */
function useDebounced<T>(value: T, ms: number): T {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return settled;
}

function Filters({
  action,
  hostId,
  onApply,
}: {
  action: string;
  hostId: string;
  onApply: (filters: { action: string; hostId: string }) => void;
}) {
  const queryClient = useQueryClient();
  const listId = useId();
  const actionId = useId();
  const hostInputId = useId();
  const [actionChoice, setActionChoice] = useState(action);
  const [hostText, setHostText] = useState('');
  const [hostError, setHostError] = useState<string | null>(null);
  const [resolving, setResolving] = useState(false);

  // The filter from the URL names a host by id: show its name in the box.
  const current = useQuery({
    queryKey: ['hosts.get', hostId],
    queryFn: () => api.hosts.get.query({ hostId }),
    enabled: hostId !== '',
    staleTime: 60_000,
  });
  const currentName = hostId === '' ? '' : (current.data?.hostname ?? '');
  useEffect(() => {
    setHostText(currentName);
  }, [currentName]);
  useEffect(() => {
    setActionChoice(action);
  }, [action]);

  const typed = useDebounced(hostText.trim(), 250);
  const suggestions = useQuery({
    queryKey: ['hosts.list', 'audit-host-filter', typed],
    queryFn: () => api.hosts.list.query({ search: typed, limit: 20 }),
    enabled: typed !== '' && typed !== currentName,
    staleTime: 10_000,
  });

  const apply = async (event: FormEvent) => {
    event.preventDefault();
    setHostError(null);
    const text = hostText.trim();
    if (text === '') {
      onApply({ action: actionChoice, hostId: '' });
      return;
    }
    if (text === currentName && hostId !== '') {
      onApply({ action: actionChoice, hostId });
      return;
    }
    setResolving(true);
    try {
      const found = await queryClient.fetchQuery({
        queryKey: ['hosts.list', 'audit-host-filter', text],
        queryFn: () => api.hosts.list.query({ search: text, limit: 20 }),
      });
      const exact = found.items.filter((h) => h.hostname.toLowerCase() === text.toLowerCase());
      const match = exact[0] ?? (found.items.length === 1 ? found.items[0] : undefined);
      if (match === undefined) {
        setHostError(
          found.items.length === 0
            ? `No host matches "${text}".`
            : `${found.items.length} hosts match "${text}": type or pick the full hostname.`,
        );
        return;
      }
      setHostText(match.hostname);
      onApply({ action: actionChoice, hostId: match.id });
    } catch (error) {
      setHostError(`Could not look the host up: ${errorText(error)}`);
    } finally {
      setResolving(false);
    }
  };

  return (
    <form className="toolbar" onSubmit={(e) => void apply(e)} aria-label="Filter the audit log">
      <div className={styles.toolbarField}>
        <label htmlFor={actionId}>Action</label>
        <select
          id={actionId}
          value={actionChoice}
          onChange={(e) => setActionChoice(e.target.value)}
        >
          <option value="">All actions</option>
          {ACTIONS.map((a) => (
            <option key={a.value} value={a.value}>
              {a.text}
            </option>
          ))}
        </select>
      </div>
      <div className={styles.toolbarField}>
        <label htmlFor={hostInputId}>Host</label>
        <input
          id={hostInputId}
          type="search"
          list={listId}
          value={hostText}
          placeholder="any host"
          autoComplete="off"
          onChange={(e) => setHostText(e.target.value)}
        />
        <datalist id={listId}>
          {(suggestions.data?.items ?? []).map((h) => (
            <option key={h.id} value={h.hostname} />
          ))}
        </datalist>
      </div>
      <button type="submit" className="btn btn-primary" disabled={resolving}>
        Apply filters
      </button>
      <button
        type="button"
        className="btn"
        disabled={action === '' && hostId === '' && actionChoice === '' && hostText === ''}
        onClick={() => {
          setHostError(null);
          setHostText('');
          setActionChoice('');
          onApply({ action: '', hostId: '' });
        }}
      >
        Clear filters
      </button>
      {hostError !== null ? (
        <p className="state state-error" role="alert" style={{ margin: 0 }}>
          {hostError}
        </p>
      ) : null}
    </form>
  );
}

// --- details ------------------------------------------------------------------------------------

type Json = Record<string, unknown>;

function asObject(value: unknown): Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Json)
    : {};
}
function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}
function num(value: unknown): number | null {
  return typeof value === 'number' ? value : null;
}

interface DriverAt {
  address: string;
  driver: string | null;
}
function drivers(value: unknown): DriverAt[] | null {
  if (!Array.isArray(value)) return null;
  return value.flatMap((v) => {
    const o = asObject(v);
    const address = str(o.address);
    return address === null ? [] : [{ address, driver: str(o.driver) }];
  });
}

function JobLink({ id }: { id: unknown }) {
  const jobId = str(id);
  if (jobId === null) return null;
  return (
    <Link href={`/jobs/${jobId}`} className="small">
      job {jobId.slice(0, 8)}
    </Link>
  );
}

/** Drivers before → after, one line per device of the group. */
function DriverChanges({ before, after }: { before: DriverAt[] | null; after: DriverAt[] | null }) {
  if (before === null || before.length === 0) return null;
  const afterOf = new Map((after ?? []).map((d) => [d.address, d.driver]));
  return (
    <ul className="small" style={{ margin: '4px 0 0', paddingLeft: 16 }}>
      {before.map((d) => (
        <li key={d.address}>
          <span className="mono">{d.address}</span>:{' '}
          <span className="mono">{d.driver ?? 'none'}</span>
          <span className={styles.arrow} aria-hidden="true">
            →
          </span>
          <span className={styles.visuallyHidden}> to </span>
          <span className="mono">
            {after === null ? 'not reported' : (afterOf.get(d.address) ?? 'none')}
          </span>
        </li>
      ))}
    </ul>
  );
}

function Details({ entry }: { entry: Entry }): ReactNode {
  const d = asObject(entry.detail);
  switch (entry.action) {
    case 'job-created':
      return (
        <>
          Rebind to <strong>{str(d.target) ?? '?'}</strong>
          {d.force === true ? ' (forced)' : ''} <JobLink id={d.jobId} />
          {str(d.bulkId) !== null ? <span className="small muted"> · part of a bulk</span> : null}
        </>
      );
    case 'job-finished': {
      const state = str(d.state);
      const reason = str(d.reasonMessage) ?? str(d.reasonCode);
      return (
        <>
          {state !== null ? <JobStateBadge state={state} /> : null} to{' '}
          <strong>{str(d.target) ?? '?'}</strong> <JobLink id={d.jobId} />
          {str(d.result) !== null && str(d.result) !== state ? (
            <span className="small muted"> · agent result: {str(d.result)}</span>
          ) : null}
          {reason !== null && state !== 'succeeded' ? <div className="small">{reason}</div> : null}
          <DriverChanges before={drivers(d.driversBefore)} after={drivers(d.driversAfter)} />
        </>
      );
    }
    case 'job-cancel-requested':
    case 'job-cancelled':
      return (
        <>
          {entry.action === 'job-cancelled' ? 'Cancelled' : 'Cancel asked'} (was{' '}
          {str(d.state) ?? str(d.from) ?? '?'}) <JobLink id={d.jobId} />
        </>
      );
    case 'bulk-created': {
      const jobs = Array.isArray(d.jobIds) ? d.jobIds.length : 0;
      const skipped = Array.isArray(d.skipped) ? d.skipped.length : 0;
      return (
        <>
          {jobs} job{jobs === 1 ? '' : 's'} to <strong>{str(d.target) ?? '?'}</strong> for{' '}
          <span className="mono">
            {str(d.vendorId) ?? '?'}:{str(d.deviceId) ?? '?'}
          </span>
          {d.canary === true ? ', canary first' : ''}
          {skipped > 0 ? `, ${skipped} skipped` : ''}
        </>
      );
    }
    case 'token-created': {
      const labels = Object.entries(asObject(d.labels));
      const maxUses = num(d.maxUses);
      return (
        <>
          Token {str(d.label) !== null ? <strong>{str(d.label)}</strong> : '(no label)'}
          {maxUses !== null ? `, ${maxUses} use${maxUses === 1 ? '' : 's'}` : ', unlimited uses'}
          {str(d.expiresAt) !== null ? (
            <span className="small muted"> · expires {formatAbsolute(String(d.expiresAt))}</span>
          ) : null}
          {labels.length > 0 ? (
            <div className={styles.labels}>
              {labels.map(([k, v]) => (
                <span key={k} className={styles.label}>
                  {k}={String(v)}
                </span>
              ))}
            </div>
          ) : null}
        </>
      );
    }
    case 'token-revoked':
      return <>Token {str(d.label) !== null ? <strong>{str(d.label)}</strong> : '(no label)'}</>;
    case 'agent-revoked':
      return (
        <>
          Agent <span className="mono small">{str(d.agentId) ?? '?'}</span> disconnected
        </>
      );
    case 'user-created':
      return (
        <>
          <strong>{str(d.username) ?? '?'}</strong> as {str(d.role) ?? '?'}
        </>
      );
    case 'user-role-changed':
      return (
        <>
          <strong>{str(d.username) ?? '?'}</strong>: {str(d.from) ?? '?'}
          <span className={styles.arrow} aria-hidden="true">
            →
          </span>
          <span className={styles.visuallyHidden}> to </span>
          {str(d.to) ?? '?'}
        </>
      );
    case 'user-disabled':
      return <strong>{str(d.username) ?? '?'}</strong>;
    case 'password-changed':
      return <span className="muted">Own password</span>;
    default: {
      const text = entry.detail === null ? '' : JSON.stringify(entry.detail);
      return (
        <span className="mono small">{text.length > 200 ? `${text.slice(0, 200)}…` : text}</span>
      );
    }
  }
}
