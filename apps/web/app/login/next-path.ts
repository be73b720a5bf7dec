/**
 * Where the login page goes once signed in: the page named by `?next=` when it is one of this
 * console's own, else the overview. The browser, not a string test, decides what a link means:
 * `/\evil.example`, `/<TAB>/evil.example` and `https:evil.example` all start like a path and are
 * read as another host. So `next` is resolved as the browser would against this origin, must
 * land on it, and only its path, query and hash are kept. Pure.
 */
export function afterLoginPath(next: string | null, origin: string): string {
  if (next === null || next === '') return '/';
  let url: URL;
  try {
    url = new URL(next, origin);
  } catch {
    return '/';
  }
  if (url.origin !== origin) return '/';
  // `/.//evil.example` resolves to the path `//evil.example`, which is itself a link to a host.
  if (url.pathname.startsWith('//')) return '/';
  return `${url.pathname}${url.search}${url.hash}`;
}
