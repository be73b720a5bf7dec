/** Status words with a colour, never colour alone: the word is what screen readers and tests read. */
export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge badge-${status}`}>{status}</span>;
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
