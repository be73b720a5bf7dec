'use client';
/**
 * Bulk rebind (operators): every ready device of one type on the hosts with given labels, one job
 * per IOMMU group. Preview first (groups per host, and what is skipped and why), then queue with
 * an explicit acknowledgement; with the canary on, the first job runs alone and the rest follow
 * only if it succeeds.
 */
import { useMutation, useQuery } from '@tanstack/react-query';
import Link from 'next/link';
import { useState } from 'react';
import { JobTable } from '../../components/job-table';
import { useCan } from '../../components/shell';
import { Empty, ErrorState, Loading } from '../../components/states';
import { api, errorText, LIVE_MS, type RouterInputs, type RouterOutputs } from '../../lib/api';
import styles from './bulk.module.css';

type BulkInput = RouterInputs['jobs']['previewBulk'];
type BulkPreview = RouterOutputs['jobs']['previewBulk'];

function parseLabels(text: string): { labels?: Record<string, string>; bad: string[] } {
  const labels: Record<string, string> = {};
  const bad: string[] = [];
  for (const part of text.split(/[,\s]+/).filter((p) => p !== '')) {
    const eq = part.indexOf('=');
    if (eq > 0 && eq < part.length - 1) labels[part.slice(0, eq)] = part.slice(eq + 1);
    else bad.push(part);
  }
  return { labels: Object.keys(labels).length > 0 ? labels : undefined, bad };
}

export default function BulkPage() {
  const canOperate = useCan('operator');
  if (!canOperate) {
    return (
      <>
        <h1>Bulk rebind</h1>
        <p className="state state-empty">Bulk rebinds are for operators.</p>
      </>
    );
  }
  return <BulkRebind />;
}

function BulkRebind() {
  const [type, setType] = useState('');
  const [labelText, setLabelText] = useState('');
  const [target, setTarget] = useState<'vfio' | 'host'>('vfio');
  const [canary, setCanary] = useState(true);
  const [acknowledged, setAcknowledged] = useState(false);
  const [force, setForce] = useState(false);
  const [persist, setPersist] = useState(false);
  const [asked, setAsked] = useState<BulkInput | null>(null);

  const capacity = useQuery({
    queryKey: ['fleet.capacity', { groupBy: 'type' }],
    queryFn: () => api.fleet.capacity.query({ groupBy: 'type' }),
  });
  const preview = useQuery({
    queryKey: ['jobs.previewBulk', asked],
    queryFn: async () => {
      if (asked === null) throw new Error('choose a device type first');
      return api.jobs.previewBulk.query(asked);
    },
    enabled: asked !== null,
    refetchOnWindowFocus: false,
    gcTime: 0,
  });
  const create = useMutation({
    mutationFn: (p: BulkPreview) => {
      if (asked === null) throw new Error('preview first');
      return api.jobs.createBulk.mutate({
        ...asked,
        canary,
        acknowledge: true,
        previewHash: p.previewHash,
        force: p.entries.some((e) => e.needsForce.length > 0) ? force : undefined,
        persist: asked.target === 'vfio' ? persist : undefined,
      });
    },
  });

  const parsed = parseLabels(labelText);
  const [vendorId, deviceId] = type.split(':');
  const formReady = vendorId !== undefined && deviceId !== undefined && parsed.bad.length === 0;
  const changed = () => {
    setAsked(null);
    setAcknowledged(false);
    setForce(false);
    create.reset();
  };

  const p = asked === null ? undefined : preview.data;
  const needsForce = p?.entries.some((e) => e.needsForce.length > 0) ?? false;
  const done = create.data;

  return (
    <>
      <h1>Bulk rebind</h1>
      <form
        className="toolbar"
        aria-label="Bulk rebind"
        onSubmit={(e) => {
          e.preventDefault();
          if (!formReady || vendorId === undefined || deviceId === undefined) return;
          create.reset();
          setAcknowledged(false);
          setForce(false);
          setAsked({ vendorId, deviceId, labels: parsed.labels, target });
          if (asked !== null) void preview.refetch();
        }}
      >
        <label>
          Device type
          <select
            value={type}
            required
            onChange={(e) => {
              setType(e.target.value);
              changed();
            }}
          >
            <option value="">
              {capacity.isPending ? 'Loading types…' : 'Choose a device type'}
            </option>
            {(capacity.data?.types ?? []).map((t) => (
              <option key={`${t.vendorId}:${t.deviceId}`} value={`${t.vendorId}:${t.deviceId}`}>
                {[t.vendorName, t.deviceName].filter((s) => s !== null).join(' ') ||
                  t.className ||
                  'Unknown device'}{' '}
                ({t.vendorId}:{t.deviceId}) · {t.ready} ready, {t.bound} bound
              </option>
            ))}
          </select>
        </label>
        <label>
          Label filter (key=value)
          <input
            type="text"
            value={labelText}
            placeholder="rack=r01"
            aria-invalid={parsed.bad.length > 0}
            onChange={(e) => {
              setLabelText(e.target.value);
              changed();
            }}
          />
        </label>
        <label>
          Target
          <select
            value={target}
            onChange={(e) => {
              setTarget(e.target.value === 'host' ? 'host' : 'vfio');
              changed();
            }}
          >
            <option value="vfio">Move to vfio</option>
            <option value="host">Restore host drivers</option>
          </select>
        </label>
        <button type="submit" className="btn btn-primary" disabled={!formReady}>
          Preview
        </button>
      </form>
      {capacity.isError ? (
        <ErrorState error={capacity.error} retry={() => capacity.refetch()} />
      ) : null}
      {parsed.bad.length > 0 ? (
        <p className="callout-warn">Not key=value: {parsed.bad.join(', ')}</p>
      ) : null}
      {asked === null ? null : preview.isPending || preview.isFetching ? (
        <Loading what="Planning every group" />
      ) : preview.isError ? (
        <ErrorState error={preview.error} retry={() => preview.refetch()} />
      ) : p === undefined ? null : (
        <BulkPlan preview={p} />
      )}
      {p !== undefined && p.entries.length > 0 && done === undefined && !preview.isFetching ? (
        <section className="card" aria-label="Confirm bulk rebind">
          <div className={styles.checks}>
            <label>
              <input
                type="checkbox"
                checked={canary}
                onChange={(e) => setCanary(e.target.checked)}
              />{' '}
              Canary: run on one host first
            </label>
            <label>
              <input
                type="checkbox"
                checked={acknowledged}
                onChange={(e) => setAcknowledged(e.target.checked)}
              />{' '}
              I understand: every device in each group listed above moves together
            </label>
            {needsForce ? (
              <label>
                <input
                  type="checkbox"
                  checked={force}
                  onChange={(e) => setForce(e.target.checked)}
                />{' '}
                Force despite warnings
              </label>
            ) : null}
            {asked?.target === 'vfio' ? (
              <label>
                <input
                  type="checkbox"
                  checked={persist}
                  onChange={(e) => setPersist(e.target.checked)}
                />{' '}
                Keep across reboots (each agent binds its groups again when it starts)
              </label>
            ) : null}
          </div>
          {create.isError ? (
            <div className="state state-error" role="alert">
              <span>{errorText(create.error)}</span>
              <button type="button" className="btn btn-small" onClick={() => preview.refetch()}>
                Preview again
              </button>
            </div>
          ) : null}
          <button
            type="button"
            className="btn btn-primary"
            disabled={!acknowledged || (needsForce && !force) || create.isPending}
            onClick={() => create.mutate(p)}
          >
            {create.isPending
              ? 'Queuing…'
              : `Queue ${p.entries.length} job${p.entries.length === 1 ? '' : 's'}`}
          </button>
        </section>
      ) : null}
      {done === undefined ? null : (
        <section aria-label="Created jobs">
          <p className={styles.done} role="status">
            Queued {done.jobs.length} job{done.jobs.length === 1 ? '' : 's'}
            {done.canaryJobId === null ? '' : ': the canary runs first'}.{' '}
            <Link href={`/jobs?bulkId=${done.bulkId}`}>Watch this bulk in the job queue</Link>
          </p>
          <BulkJobs bulkId={done.bulkId} />
        </section>
      )}
    </>
  );
}

/** The bulk's jobs, live (the canary's dependents wait for it, then run or are cancelled). */
function BulkJobs({ bulkId }: { bulkId: string }) {
  const input = { bulkId, limit: 50 };
  const jobs = useQuery({
    queryKey: ['jobs.list', input],
    queryFn: () => api.jobs.list.query(input),
    refetchInterval: LIVE_MS,
  });
  if (jobs.isPending) return <Loading what="Loading the bulk's jobs" />;
  if (jobs.isError) return <ErrorState error={jobs.error} retry={() => jobs.refetch()} />;
  return <JobTable jobs={jobs.data.items} caption="Jobs of this bulk" />;
}

function BulkPlan({ preview: p }: { preview: BulkPreview }) {
  const byHost = new Map<string, BulkPreview['entries']>();
  for (const e of p.entries) byHost.set(e.hostname, [...(byHost.get(e.hostname) ?? []), e]);
  return (
    <>
      <h2>
        {p.entries.length} group{p.entries.length === 1 ? '' : 's'} on {p.hosts} host
        {p.hosts === 1 ? '' : 's'}
        {p.offlineHosts > 0 ? ` (${p.offlineHosts} offline: their jobs wait)` : ''}
      </h2>
      {p.entries.length === 0 ? (
        <Empty>No IOMMU group of this type can move on the chosen hosts.</Empty>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className={styles.caption}>Groups that get a job</caption>
            <thead>
              <tr>
                <th scope="col">Host</th>
                <th scope="col" className="num">
                  Group
                </th>
                <th scope="col">Devices of this type</th>
                <th scope="col">Blast radius</th>
                <th scope="col">Warnings</th>
              </tr>
            </thead>
            <tbody>
              {[...byHost.entries()].flatMap(([hostname, entries]) =>
                entries.map((e, i) => (
                  <tr key={`${e.hostId}/${e.iommuGroup}`}>
                    <td>
                      {i === 0 ? (
                        <Link href={`/hosts/${e.hostId}`}>{hostname}</Link>
                      ) : (
                        <span className="muted">〃</span>
                      )}
                      {e.hostOnline ? null : <span className="muted small"> offline</span>}
                    </td>
                    <td className="num">{e.iommuGroup}</td>
                    <td className="mono">{e.matched.join(', ')}</td>
                    <td className="small">
                      {e.blastRadius
                        .map((b) => `${b.address} (${b.driver ?? 'no driver'})`)
                        .join(', ') || '—'}
                    </td>
                    <td className="small">
                      {e.warnings.length === 0
                        ? '—'
                        : e.warnings.map((w) => `${w.code}: ${w.message}`).join(' ')}
                    </td>
                  </tr>
                )),
              )}
            </tbody>
          </table>
        </div>
      )}
      {p.skipped.length === 0 ? null : (
        <>
          <h2>Skipped ({p.skipped.length})</h2>
          <div className="table-wrap">
            <table>
              <caption className={styles.caption}>Skipped groups</caption>
              <thead>
                <tr>
                  <th scope="col">Host</th>
                  <th scope="col" className="num">
                    Group
                  </th>
                  <th scope="col">Address</th>
                  <th scope="col">Why</th>
                </tr>
              </thead>
              <tbody>
                {p.skipped.map((s) => (
                  <tr key={`${s.hostId}/${s.iommuGroup}/${s.address}`}>
                    <td>
                      <Link href={`/hosts/${s.hostId}`}>{s.hostname}</Link>
                    </td>
                    <td className="num">{s.iommuGroup}</td>
                    <td className="mono">{s.address}</td>
                    <td>
                      <code>{s.code}</code>: {s.reason}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
    </>
  );
}
