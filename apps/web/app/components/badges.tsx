import { READINESS_STATUSES, type ReadinessStatus } from '@vfio-fleet/core';

/** core's readiness statuses, in its order: every status filter and legend lists these. */
export const DEVICE_STATUSES = READINESS_STATUSES;

/** The word each status shows; its colour is the `badge-<status>` class and `--<status>` in globals.css. */
export const STATUS_LABELS: Record<ReadinessStatus, string> = {
  'in-use': 'in use',
  bound: 'bound',
  ready: 'ready',
  blocked: 'blocked',
};

export function statusLabel(status: string): string {
  const known = DEVICE_STATUSES.find((s) => s === status);
  return known === undefined ? status : STATUS_LABELS[known];
}

/** Status words with a colour, never colour alone: the word is what screen readers and tests read. */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${status}`}>{statusLabel(status)}</span>;
}

/**
 * A host whose agent runs no jobs (no `--allow-rebind`, or an older agent that does not say):
 * shown wherever rebinding would be offered, with the way to allow it.
 */
export function ReadOnlyBadge({ allowRebind }: { allowRebind: boolean | null }) {
  if (allowRebind === true) return null;
  return (
    <span
      className="badge badge-read-only"
      title={
        allowRebind === false
          ? 'Its agent runs without --allow-rebind: restart it with --allow-rebind to allow rebinding'
          : 'Its agent has not said it may rebind (an older agent): restart it with --allow-rebind'
      }
    >
      read-only
    </span>
  );
}

export function JobStateBadge({ state }: { state: string }) {
  return <span className={`badge badge-job-${state}`}>{state.replace('_', ' ')}</span>;
}

export function HostStateBadge({ state }: { state: string }) {
  return <span className={`badge badge-host-${state}`}>{state}</span>;
}

/**
 * An agent's version with how it compares to the server's: "outdated" (older than the version this
 * server ships) and "newer" are words, not only colours; an unparsable version shows as reported.
 */
export function AgentVersion({
  version,
  status,
}: {
  version: string | null;
  status: 'current' | 'outdated' | 'newer' | 'unknown';
}) {
  if (version === null) return <span className="muted">not reported</span>;
  return (
    <span className="agent-version">
      <span className="mono">{version}</span>
      {status === 'outdated' || status === 'newer' ? (
        <>
          {' '}
          <span className={`badge badge-agent-${status}`}>{status}</span>
        </>
      ) : null}
    </span>
  );
}
