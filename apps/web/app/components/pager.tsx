'use client';
import { useCallback, useState } from 'react';

/**
 * Keyset pagination for the API's opaque cursors: remembers the cursors of the pages before, so
 * "Previous" works without offsets. `reset()` when the filters change.
 */
export function useCursorPager() {
  const [stack, setStack] = useState<(string | null)[]>([null]);
  const cursor = stack[stack.length - 1] ?? null;
  const next = useCallback((nextCursor: string) => setStack((s) => [...s, nextCursor]), []);
  const prev = useCallback(() => setStack((s) => (s.length > 1 ? s.slice(0, -1) : s)), []);
  const reset = useCallback(() => setStack([null]), []);
  return { cursor, page: stack.length, next, prev, reset };
}

export function Pager({
  page,
  nextCursor,
  onNext,
  onPrev,
}: {
  page: number;
  nextCursor: string | null | undefined;
  onNext: (cursor: string) => void;
  onPrev: () => void;
}) {
  // A list that fits on one page gets no pager: two dead buttons only distract.
  if (page <= 1 && (nextCursor === null || nextCursor === undefined)) return null;
  return (
    <nav className="pager" aria-label="Pages">
      <button type="button" className="btn btn-small" disabled={page <= 1} onClick={onPrev}>
        Previous
      </button>
      <span>Page {page}</span>
      <button
        type="button"
        className="btn btn-small"
        disabled={nextCursor === null || nextCursor === undefined}
        onClick={() => {
          if (nextCursor) onNext(nextCursor);
        }}
      >
        Next
      </button>
    </nav>
  );
}
