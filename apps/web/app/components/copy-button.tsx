'use client';
/**
 * "Copy" for a command or a secret. navigator.clipboard exists only in secure contexts (https or
 * localhost), and a console is often reached over plain http on a LAN, so the fallback selects the
 * text on the page (and tries the legacy copy command) and tells the user to press Ctrl+C.
 * The outcome is announced through a polite live region, since the button itself does not change.
 */
import { type RefObject, useEffect, useState } from 'react';

type Outcome = 'idle' | 'copied' | 'selected';

function selectContents(element: HTMLElement): boolean {
  const selection = window.getSelection();
  if (selection === null) return false;
  selection.removeAllRanges();
  const range = document.createRange();
  range.selectNodeContents(element);
  selection.addRange(range);
  return true;
}

export function CopyButton({
  text,
  label = 'Copy',
  target,
}: {
  text: string;
  /** The button's text, e.g. "Copy command". */
  label?: string;
  /** The element that shows `text`: selected when the clipboard cannot be written. */
  target?: RefObject<HTMLElement | null>;
}) {
  const [outcome, setOutcome] = useState<Outcome>('idle');
  useEffect(() => {
    if (outcome === 'idle') return;
    const timer = setTimeout(() => setOutcome('idle'), 4_000);
    return () => clearTimeout(timer);
  }, [outcome]);

  const copy = async () => {
    try {
      if (navigator.clipboard === undefined) throw new Error('no clipboard API here');
      await navigator.clipboard.writeText(text);
      setOutcome('copied');
      return;
    } catch {
      // Not a secure context, or permission refused: fall back to the selection below.
    }
    const element = target?.current;
    if (element !== null && element !== undefined && selectContents(element)) {
      // execCommand is deprecated but still the only synchronous copy without the clipboard API.
      const copied = document.execCommand?.('copy') ?? false;
      setOutcome(copied ? 'copied' : 'selected');
    } else {
      setOutcome('selected');
    }
  };

  return (
    <span className="copy-button">
      <button type="button" className="btn btn-small" onClick={() => void copy()}>
        {label}
      </button>{' '}
      <span role="status" aria-live="polite" className="small muted">
        {outcome === 'copied'
          ? 'Copied'
          : outcome === 'selected'
            ? 'Selected: press Ctrl+C to copy'
            : ''}
      </span>
    </span>
  );
}
