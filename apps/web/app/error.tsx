'use client';
/**
 * The error boundary of every page: a render or data error shows this in place of the page (the
 * shell and its navigation stay), with "Try again" re-rendering the page. The message is the
 * error's own; digest identifies a server-side error in the server's log without exposing it.
 */
import Link from 'next/link';
import { useEffect } from 'react';

export default function ErrorPage({
  error,
  reset,
}: {
  error: Error & { digest?: string };
  reset: () => void;
}) {
  useEffect(() => {
    // The browser console is where a developer looks first; the server logged its own side.
    console.error(error);
  }, [error]);
  return (
    <section className="card" aria-labelledby="error-title" style={{ maxWidth: 720 }}>
      <h1 id="error-title">Something went wrong on this page</h1>
      <p className="state state-error" role="alert">
        {error.message || 'An unexpected error occurred.'}
      </p>
      {error.digest !== undefined ? (
        <p className="small muted">
          Reference for the server log: <code>{error.digest}</code>
        </p>
      ) : null}
      <p>Nothing was changed by this error. Try again, or go back to the overview.</p>
      <div className="row">
        <button type="button" className="btn btn-primary" onClick={() => reset()}>
          Try again
        </button>
        <Link href="/" className="btn">
          Go to the fleet overview
        </Link>
      </div>
    </section>
  );
}
