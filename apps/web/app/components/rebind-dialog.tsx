'use client';
/**
 * The rebind confirmation: asks the server for the plan (jobs.preview) and shows exactly what the
 * agent would do (ordered sysfs steps), every device that moves with it (blast radius), warnings
 * and the drivers before. Queuing needs the explicit acknowledgement (and "force" when the plan
 * has warnings the agent only passes with it); a refused plan, an already active job or a plan
 * with nothing to do offer no way to queue at all, except a group already on vfio that the
 * operator asks to keep across reboots (the agent then only records it).
 */
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import Link from 'next/link';
import { useRouter } from 'next/navigation';
import { useEffect, useId, useRef, useState } from 'react';
import { api, errorCode, errorText, type RouterOutputs } from '../lib/api';
import styles from './rebind-dialog.module.css';
import { ErrorState, Loading } from './states';

type Preview = RouterOutputs['jobs']['preview'];
type Step = NonNullable<Preview['plan']>['steps'][number];

export interface RebindDialogProps {
  hostId: string;
  hostname: string;
  group: number | null;
  address: string;
  target: 'vfio' | 'host';
  /** Opened to keep a binding across reboots: "keep" starts checked. */
  keep?: boolean;
  onClose: () => void;
}

function stepTarget(step: Step): string {
  if ('path' in step) return step.path;
  if ('module' in step) return `modprobe ${step.module}`;
  return '';
}

function stepValue(step: Step): string {
  if ('value' in step) return step.value;
  if ('expect' in step) return `expect ${JSON.stringify(step.expect)}`;
  return '';
}

export function RebindDialog({
  hostId,
  hostname,
  group,
  address,
  target,
  keep = false,
  onClose,
}: RebindDialogProps) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const router = useRouter();
  const queryClient = useQueryClient();
  const [acknowledged, setAcknowledged] = useState(false);
  const [force, setForce] = useState(false);
  const [persist, setPersist] = useState(keep);

  useEffect(() => {
    const dialog = ref.current;
    if (dialog !== null && !dialog.open) dialog.showModal();
  }, []);

  const input = { hostId, address, target };
  const preview = useQuery({
    queryKey: ['jobs.preview', input],
    queryFn: () => api.jobs.preview.query(input),
    // A preview is a snapshot the operator acknowledges: it must not change under their eyes.
    refetchOnWindowFocus: false,
    staleTime: 0,
    gcTime: 0,
  });
  const create = useMutation({
    mutationFn: (p: Preview) =>
      api.jobs.create.mutate({
        hostId,
        address,
        target,
        acknowledge: true,
        previewHash: p.previewHash,
        force: p.needsForce.length > 0 ? force : undefined,
        persist: target === 'vfio' ? persist : undefined,
      }),
    onSuccess: async (job) => {
      await queryClient.invalidateQueries({ queryKey: ['hostView.get'] });
      router.push(`/jobs/${job.id}`);
    },
  });

  const again = () => {
    create.reset();
    setAcknowledged(false);
    setForce(false);
    void preview.refetch();
  };

  const title = `Rebind ${group === null ? `device ${address}` : `IOMMU group ${group}`} on ${hostname}`;
  const p = preview.data;
  const plan = p?.plan ?? null;
  // A group already on vfio can still be kept across reboots: that job writes only the record.
  const keepOnly = target === 'vfio' && plan !== null && plan.alreadyDone;
  const canQueue =
    p?.ok === true &&
    plan !== null &&
    (keepOnly || (!plan.alreadyDone && plan.steps.length > 0)) &&
    p.activeJobId === null;
  const needsForce = p !== undefined && p.needsForce.length > 0;
  const ready =
    canQueue &&
    acknowledged &&
    (!needsForce || force) &&
    (!keepOnly || persist) &&
    !create.isPending;

  return (
    <dialog
      ref={ref}
      aria-labelledby={titleId}
      className={styles.dialog}
      // Escape and Close both end in the close event.
      onClose={onClose}
    >
      <div className="dialog-body">
        <h2 id={titleId} className={styles.title}>
          {title}
        </h2>
        <p className={styles.summary}>
          {target === 'vfio' ? 'Move to vfio' : 'Restore host drivers'}, planned from{' '}
          <span className="mono">{address}</span>.
        </p>
        {preview.isPending || preview.isFetching ? (
          <Loading what="Planning the rebind" />
        ) : preview.isError ? (
          <ErrorState error={preview.error} retry={again} />
        ) : p === undefined ? null : (
          <PreviewBody preview={p} keepOnly={keepOnly} />
        )}
        {create.isError ? (
          <div className="state state-error" role="alert">
            <span>
              <strong>
                {errorCode(create.error) === 'CONFLICT' ? 'Not queued (conflict):' : 'Not queued:'}
              </strong>{' '}
              {errorText(create.error)}
            </span>
            <button type="button" className="btn btn-small" onClick={again}>
              Preview again
            </button>
          </div>
        ) : null}
        {canQueue && !preview.isFetching ? (
          <div className={styles.ack}>
            <label>
              <input
                type="checkbox"
                checked={acknowledged}
                onChange={(e) => setAcknowledged(e.target.checked)}
              />{' '}
              {keepOnly
                ? 'I understand: the agent binds this whole group to vfio again at every start'
                : 'I understand: every device listed above moves together'}
            </label>
            {target === 'vfio' ? (
              <label>
                <input
                  type="checkbox"
                  checked={persist}
                  onChange={(e) => setPersist(e.target.checked)}
                />{' '}
                Keep across reboots (the agent binds the group again when it starts)
              </label>
            ) : null}
            {target === 'vfio' && !persist && !keepOnly ? (
              <p className="muted small">
                Not kept: the group returns to its host drivers at the next reboot.
              </p>
            ) : null}
            {target === 'host' ? (
              <p className="muted small">
                vfio-fleet forgets any record that keeps this group on vfio across reboots.
              </p>
            ) : null}
            {needsForce ? (
              <label>
                <input
                  type="checkbox"
                  checked={force}
                  onChange={(e) => setForce(e.target.checked)}
                />{' '}
                Force despite warnings ({p?.needsForce.join(', ')})
              </label>
            ) : null}
          </div>
        ) : null}
      </div>
      <div className="dialog-actions">
        <button type="button" className="btn" onClick={again} disabled={preview.isFetching}>
          Preview again
        </button>
        <span className="spacer" />
        <button type="button" className="btn" onClick={() => ref.current?.close()}>
          Close
        </button>
        {canQueue ? (
          <button
            type="button"
            className="btn btn-primary"
            disabled={!ready}
            onClick={() => {
              if (p !== undefined) create.mutate(p);
            }}
          >
            {create.isPending ? 'Queuing…' : keepOnly ? 'Keep across reboots' : 'Queue rebind'}
          </button>
        ) : null}
      </div>
    </dialog>
  );
}

function PreviewBody({ preview: p, keepOnly }: { preview: Preview; keepOnly: boolean }) {
  const plan = p.plan;
  return (
    <>
      {p.hostOnline ? null : (
        <p className="callout-warn">
          {p.hostname} is offline: the job waits in the queue until its agent is back or its
          deadline passes.
        </p>
      )}
      {p.activeJobId === null ? null : (
        <div className="state state-error" role="alert">
          This group already has an active job:{' '}
          <Link href={`/jobs/${p.activeJobId}`}>view job</Link>. Wait for it to end, then preview
          again.
        </div>
      )}
      {p.refusal === null ? null : (
        <div className={styles.refusal} role="alert">
          <p>
            <strong>Refused</strong> (<code>{p.refusal.code}</code>): {p.refusal.message}
          </p>
          {p.refusal.reasons.length === 0 ? null : (
            <ul aria-label="Why it is refused">
              {p.refusal.reasons.map((r) => (
                <li key={`${r.code}:${r.message}`}>
                  <code>{r.code}</code>: {r.message}
                  {r.remedy === null ? null : (
                    <div>
                      <strong>Remedy:</strong> {r.remedy}
                    </div>
                  )}
                </li>
              ))}
            </ul>
          )}
          <p className="small">Nothing can be queued for this plan.</p>
        </div>
      )}
      {plan === null ? null : keepOnly ? (
        <p className="state state-empty">
          The group is already on vfio: no device moves. Keeping it records the binding, so the
          agent binds the group again at every start.
        </p>
      ) : plan.alreadyDone ? (
        <p className="state state-empty">
          The group is already where it should be: there is nothing to do.
        </p>
      ) : (
        <>
          <h3>Steps, in order</h3>
          <div className="table-wrap">
            <table>
              <caption className={styles.srOnly}>Steps</caption>
              <thead>
                <tr>
                  <th scope="col" className="num">
                    #
                  </th>
                  <th scope="col">Action</th>
                  <th scope="col">Path</th>
                  <th scope="col">Value</th>
                  <th scope="col">What it does</th>
                </tr>
              </thead>
              <tbody>
                {plan.steps.map((step, i) => (
                  // biome-ignore lint/suspicious/noArrayIndexKey: steps are ordered and fixed for this preview
                  <tr key={i}>
                    <td className="num">{i + 1}</td>
                    <td className="mono">{step.action}</td>
                    <td className={`mono ${styles.wrap}`}>{stepTarget(step)}</td>
                    <td className={`mono ${styles.wrap}`}>{stepValue(step)}</td>
                    <td className="small">{step.description}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      {p.blastRadius.length === 0 ? null : (
        <>
          <h3>
            Blast radius: {p.blastRadius.length} device{p.blastRadius.length === 1 ? '' : 's'} move
          </h3>
          <div className="table-wrap">
            <table>
              <caption className={styles.srOnly}>Blast radius</caption>
              <thead>
                <tr>
                  <th scope="col">Address</th>
                  <th scope="col">Name</th>
                  <th scope="col">Driver it loses</th>
                  <th scope="col">Interfaces lost</th>
                  <th scope="col">Why it moves</th>
                </tr>
              </thead>
              <tbody>
                {p.blastRadius.map((b) => (
                  <tr key={`${b.address}:${b.reason}`}>
                    <td className="mono">{b.address}</td>
                    <td>{b.name}</td>
                    <td className="mono">{b.driver ?? '—'}</td>
                    <td className="mono">{b.netInterfaces.join(', ') || '—'}</td>
                    <td className="small">{b.reason}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      )}
      {p.warnings.length === 0 ? null : (
        <>
          <h3>Warnings</h3>
          <ul className={styles.warnings} aria-label="Warnings">
            {p.warnings.map((w) => (
              <li
                key={`${w.code}:${w.message}`}
                className={w.severity === 'info' ? styles.info : 'callout-warn'}
              >
                <strong>{w.severity}</strong> <code>{w.code}</code>: {w.message}
                {w.remedy === null ? null : <div>Remedy: {w.remedy}</div>}
              </li>
            ))}
          </ul>
        </>
      )}
      {plan === null || plan.preconditions.length === 0 ? null : (
        <>
          <h3>Drivers before</h3>
          <div className="table-wrap">
            <table>
              <caption className={styles.srOnly}>Drivers before</caption>
              <thead>
                <tr>
                  <th scope="col">Address</th>
                  <th scope="col">Driver</th>
                  <th scope="col">driver_override</th>
                </tr>
              </thead>
              <tbody>
                {plan.preconditions.map((c) => (
                  <tr key={c.address}>
                    <td className="mono">{c.address}</td>
                    <td className="mono">{c.driver ?? 'none'}</td>
                    <td className="mono">{c.driverOverride ?? '—'}</td>
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
