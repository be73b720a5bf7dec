/**
 * A request's target as a URL. `new URL` throws on a target such as `http://[`, which Node's
 * parser lets through, and a throw in a request or upgrade listener takes the whole process down:
 * callers answer null with a 400.
 */
import type { IncomingMessage } from 'node:http';

export function requestUrl(req: IncomingMessage): URL | null {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}
