import Link from 'next/link';

/** Any path no page answers, and every notFound() call. Rendered inside the shell. */
export default function NotFound() {
  return (
    <section className="card" aria-labelledby="not-found-title" style={{ maxWidth: 640 }}>
      <h1 id="not-found-title">Page not found</h1>
      <p>
        There is no page at this address. It may have been mistyped, or the link is out of date.
      </p>
      <nav aria-label="Where to go instead" className="row">
        <Link href="/" className="btn btn-primary">
          Go to the fleet overview
        </Link>
        <Link href="/hosts" className="btn">
          Hosts
        </Link>
        <Link href="/devices" className="btn">
          Devices
        </Link>
      </nav>
    </section>
  );
}
