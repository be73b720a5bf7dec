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
