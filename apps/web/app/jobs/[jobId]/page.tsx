'use client';
/**
 * One job, live until it ends: its state timeline (from the job's events), the per-step log the
 * agent streamed, and when it failed or rolled back the failing step and the kernel's error up
 * front, with every device's driver before and after. Operators can cancel it while it is active.
 */
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { useParams } from 'next/navigation';
import { useEffect, useId, useRef, useState } from 'react';
import { JobStateBadge } from '../../components/badges';
import { formatAbsolute, RelativeTime } from '../../components/relative-time';
import { useCan } from '../../components/shell';
import { ErrorState, Loading } from '../../components/states';
import { api, errorText, LIVE_MS, type RouterOutputs } from '../../lib/api';
import {
  type DriverState,
  isActiveState,
  type PersistenceView,
  parseResult,
  parseStepEvent,
  type ResultView,
  type StepEventView,
  shortId,
  stepPath,
} from '../job-format';
import styles from './job.module.css';

type Job = RouterOutputs['jobs']['get'];
type JobEvent = Job['events'][number];

export default function JobPage() {
  const params = useParams<{ jobId: string }>();
  const jobId = typeof params.jobId === 'string' ? params.jobId : '';
  const job = useQuery({
    queryKey: ['jobs.get', { jobId }],
    queryFn: () => api.jobs.get.query({ jobId }),
    // Live until it ends; a finished job never changes again (late results are events only).
    refetchInterval: (query) =>
      query.state.data !== undefined && !isActiveState(query.state.data.state) ? false : LIVE_MS,
  });
  if (job.isPending) return <Loading what="Loading job" />;
  if (job.isError) {
    return (
      <>
        <h1>Job</h1>
        <ErrorState error={job.error} retry={() => job.refetch()} />
      </>
    );
  }
  return <JobDetail job={job.data} />;
}

function JobDetail({ job: j }: { job: Job }) {
  const canCancel = useCan('operator') && isActiveState(j.state);
  const result = parseResult(j.result);
  const steps: { event: JobEvent; step: StepEventView }[] = [];
  const timeline: JobEvent[] = [];
  for (const event of j.events) {
    const step = parseStepEvent(event.data);
    if (step === null) timeline.push(event);
    else steps.push({ event, step });
  }
  return (
    <>
      <div className="row">
        <h1 className={styles.h1}>Job {shortId(j.id)}</h1>
        <JobStateBadge state={j.state} />
        {isActiveState(j.state) ? (
          <span className="muted small" role="status">
            live: updating every few seconds
          </span>
        ) : null}
        <span className="spacer" />
        {canCancel ? <CancelJob job={j} /> : null}
      </div>
      <p className={styles.lead}>
        {j.target === 'vfio' ? 'Move to vfio' : 'Restore host drivers'}: IOMMU group {j.iommuGroup}{' '}
        (<span className="mono">{j.address}</span>) on{' '}
        <Link href={`/hosts/${j.hostId}`}>{j.hostname}</Link>
      </p>
      <Outcome job={j} result={result} />
      <section className="card" aria-label="Job details">
        <dl className={styles.facts}>
          <dt>Job id</dt>
          <dd className="mono">{j.id}</dd>
          <dt>Created</dt>
          <dd>
            <RelativeTime iso={j.createdAt} /> by {j.createdByName ?? 'unknown'}
          </dd>
          {j.finishedAt === null ? (
            <>
              <dt>Deadline</dt>
              <dd>
                <RelativeTime iso={j.deadline} />
              </dd>
            </>
          ) : (
            <>
              <dt>Finished</dt>
              <dd>
                <RelativeTime iso={j.finishedAt} />
              </dd>
            </>
          )}
          <dt>Attempt</dt>
          <dd>{j.attempt}</dd>
          <dt>Force</dt>
          <dd>{j.force ? 'yes' : 'no'}</dd>
          {j.target === 'vfio' ? (
            <>
              <dt>Across reboots</dt>
              <dd>{j.persist ? 'kept (the agent binds the group again at start)' : 'not kept'}</dd>
            </>
          ) : null}
          {j.bulkId === null ? null : (
            <>
              <dt>Bulk</dt>
              <dd>
                <Link href={`/jobs?bulkId=${j.bulkId}`}>all jobs of bulk {shortId(j.bulkId)}</Link>
                {j.canaryOf === null ? null : (
                  <>
                    {' '}
                    · waits for canary{' '}
                    <Link href={`/jobs/${j.canaryOf}`}>job {shortId(j.canaryOf)}</Link>
                  </>
                )}
              </dd>
            </>
          )}
          {j.cancelRequestedAt === null ? null : (
            <>
              <dt>Cancel requested</dt>
              <dd>
                <RelativeTime iso={j.cancelRequestedAt} /> (the agent decides; a rebind is never cut
                between two sysfs writes)
              </dd>
            </>
          )}
        </dl>
      </section>
      <h2>Timeline</h2>
      <ol className={styles.timeline} aria-label="State timeline">
        {timeline.map((e) => (
          <li key={e.id}>
            <time dateTime={e.at} title={formatAbsolute(e.at)} className="muted small">
              {new Date(e.at).toLocaleTimeString()}
            </time>{' '}
            {e.fromState === e.toState || e.fromState === null ? (
              <JobStateBadge state={e.toState} />
            ) : (
              <>
                <JobStateBadge state={e.fromState} /> → <JobStateBadge state={e.toState} />
              </>
            )}{' '}
            {e.message}
          </li>
        ))}
      </ol>
      <h2>Step log</h2>
      {steps.length === 0 ? (
        <p className="state state-empty">
          {isActiveState(j.state) ? 'No step has run yet.' : 'No step ran.'}
        </p>
      ) : (
        <div className="table-wrap">
          <table>
            <caption className={styles.srOnly}>Step log</caption>
            <thead>
              <tr>
                <th scope="col">Phase</th>
                <th scope="col" className="num">
                  #
                </th>
                <th scope="col">Action</th>
                <th scope="col">Path</th>
                <th scope="col">Value</th>
                <th scope="col">Status</th>
                <th scope="col" className="num">
                  Duration
                </th>
                <th scope="col">Kernel error</th>
              </tr>
            </thead>
            <tbody>
              {steps.map(({ event, step }) => (
                <tr key={event.id} className={step.status === 'failed' ? styles.failedRow : ''}>
                  <td>{step.phase}</td>
                  <td className="num">{step.index}</td>
                  <td className="mono">{step.action}</td>
                  <td className={`mono ${styles.wrap}`}>
                    {step.path ?? (step.step === undefined ? '' : stepPath(step.step))}
                  </td>
                  <td className="mono">{step.value ?? ''}</td>
                  <td>
                    <span className={`badge ${styles[`step-${step.status}`] ?? ''}`}>
                      {step.status}
                    </span>
                  </td>
                  <td className="num">
                    {step.durationMs === null ? '' : `${Math.round(step.durationMs)} ms`}
                  </td>
                  <td className="mono">
                    {step.error === null ? '' : `${step.error.errno}: ${step.error.message}`}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {result === null || (result.before.length === 0 && result.after.length === 0) ? null : (
        <DriversBeforeAfter before={result.before} after={result.after} />
      )}
    </>
  );
}

/** The ending, up front: why it failed (step and kernel error) or why it was expired/cancelled. */
function Outcome({ job: j, result }: { job: Job; result: ResultView | null }) {
  const failed = j.state === 'failed' || j.state === 'rolled_back';
  if (j.state === 'succeeded') {
    return (
      <>
        <p className={styles.success}>Succeeded: every step ran and was verified.</p>
        <PersistenceNote persistence={result?.persistence ?? null} />
      </>
    );
  }
  if (!failed && j.reasonCode === null) return null;
  const step = result?.failedStep ?? null;
  return (
    <div className={failed ? styles.failure : 'callout-warn'} role="alert">
      <p className={styles.outcomeTitle}>
        {j.state === 'rolled_back'
          ? 'Rolled back: a step failed and every device was restored.'
          : j.state === 'failed' && result?.status === 'refused'
            ? 'Refused by the agent: nothing was written, every device is as it was.'
            : j.state === 'failed'
              ? 'Failed: the host may be between drivers; check the drivers after.'
              : j.state === 'expired'
                ? 'Expired'
                : j.state === 'cancelled'
                  ? 'Cancelled'
                  : 'Reason'}
      </p>
      {j.reasonCode === null ? null : (
        <p>
          Reason <code>{j.reasonCode}</code>
          {j.reasonMessage === null ? null : `: ${j.reasonMessage}`}
        </p>
      )}
      {step === null ? null : (
        <p>
          Failing step: {step.phase} step {step.index}, <code>{step.step.action}</code>{' '}
          <code>{stepPath(step.step)}</code>
          {step.step.value === undefined ? null : (
            <>
              {' '}
              ← <code>{step.step.value}</code>
            </>
          )}
        </p>
      )}
      {result?.kernelError == null ? null : (
        <p className={styles.kernelError}>
          Kernel error: <code>{result.kernelError.errno}</code> {result.kernelError.message}
        </p>
      )}
    </div>
  );
}

/** What a succeeded job changed in the agent's record of bindings kept across reboots. */
function PersistenceNote({ persistence }: { persistence: PersistenceView | null }) {
  if (persistence === null) return null;
  if (persistence.error !== null) {
    return (
      <p className="callout-warn" role="alert">
        The binding changed, but the agent's record of what it keeps across reboots was not updated:{' '}
        {persistence.error}
      </p>
    );
  }
  const list = (bindings: PersistenceView['kept']) =>
    bindings.map((b) => `${b.address} (${b.driver})`).join(', ');
  return (
    <>
      {persistence.kept.length === 0 ? null : (
        <p>Kept across reboots by vfio-fleet: {list(persistence.kept)}.</p>
      )}
      {persistence.forgotten.length === 0 ? null : (
        <p>No longer kept on vfio at boot: {list(persistence.forgotten)}.</p>
      )}
    </>
  );
}

function DriversBeforeAfter({ before, after }: { before: DriverState[]; after: DriverState[] }) {
  const addresses = [...new Set([...before, ...after].map((d) => d.address))];
  const find = (list: DriverState[], address: string) => list.find((d) => d.address === address);
  return (
    <>
      <h2>Drivers before and after</h2>
      <div className="table-wrap">
        <table>
          <caption className={styles.srOnly}>Drivers before and after</caption>
          <thead>
            <tr>
              <th scope="col">Address</th>
              <th scope="col">Driver before</th>
              <th scope="col">Driver after</th>
              <th scope="col">driver_override after</th>
            </tr>
          </thead>
          <tbody>
            {addresses.map((address) => {
              const b = find(before, address);
              const a = find(after, address);
              return (
                <tr key={address}>
                  <td className="mono">{address}</td>
                  <td className="mono">{b?.driver ?? 'none'}</td>
                  <td className="mono">{a?.driver ?? 'none'}</td>
                  <td className="mono">{a?.driverOverride ?? '—'}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
    </>
  );
}

function CancelJob({ job }: { job: Job }) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const [open, setOpen] = useState(false);
  const queryClient = useQueryClient();
  const cancel = useMutation({
    mutationFn: () => api.jobs.cancel.mutate({ jobId: job.id }),
    onSuccess: async () => {
      ref.current?.close();
      await queryClient.invalidateQueries({ queryKey: ['jobs.get', { jobId: job.id }] });
    },
  });
  useEffect(() => {
    if (open && ref.current !== null && !ref.current.open) ref.current.showModal();
  }, [open]);
  return (
    <>
      <button
        type="button"
        className="btn btn-danger"
        onClick={() => {
          cancel.reset();
          setOpen(true);
        }}
        disabled={job.cancelRequested}
      >
        {job.cancelRequested ? 'Cancel requested' : 'Cancel job'}
      </button>
      {open ? (
        <dialog ref={ref} aria-labelledby={titleId} onClose={() => setOpen(false)}>
          <div className="dialog-body">
            <h2 id={titleId}>Cancel job {shortId(job.id)}?</h2>
            <p>
              {job.state === 'queued'
                ? 'It has not been sent to the agent yet: it is cancelled at once.'
                : 'The agent is already working on it: it stops before its next sysfs write if it can, and rolls back what it did.'}
            </p>
            {cancel.isError ? (
              <p className="state state-error" role="alert">
                {errorText(cancel.error)}
              </p>
            ) : null}
          </div>
          <div className="dialog-actions">
            <button type="button" className="btn" onClick={() => ref.current?.close()}>
              Keep it
            </button>
            <button
              type="button"
              className="btn btn-danger"
              disabled={cancel.isPending}
              onClick={() => cancel.mutate()}
            >
              Yes, cancel job
            </button>
          </div>
        </dialog>
      ) : null}
    </>
  );
}
