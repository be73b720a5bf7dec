/**
 * What every tRPC request must satisfy before any procedure runs (checked in createContext, so a
 * refused request touches nothing and gets tRPC's own error shape):
 *
 * - A state-changing request (POST) comes from the console's own origin. A browser says where a
 *   request came from in `Sec-Fetch-Site` (set by the browser, out of a page's reach) or, in
 *   older browsers, `Origin`; a cross-site form or fetch carrying the user's cookie is refused.
 *   A request with neither is not from a browser page (curl, scripts, the agent's tooling) and
 *   carries no victim's cookie, so it passes.
 * - A POST body is JSON. tRPC also accepts multipart/form-data and octet-stream, which a
 *   cross-site HTML form can send without a CORS preflight.
 * - A batch holds at most MAX_BATCH_CALLS calls (procedures that hash a password refuse any
 *   batch themselves: trpc.ts's `alone`).
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { TRPCError } from '@trpc/server';
import type { TRPCRequestInfo } from '@trpc/server/http';
import { MAX_BATCH_CALLS } from './limits';

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/**
 * Why a request with these headers is cross-site, or null when it is same-origin or from no
 * browser page at all. Pure.
 */
export function crossSiteReason(headers: IncomingHttpHeaders): string | null {
  const site = header(headers, 'sec-fetch-site')?.trim().toLowerCase();
  if (site !== undefined && site !== '') {
    // `none`: the user's own action (typed, bookmarked), no page involved.
    if (site === 'same-origin' || site === 'none') return null;
    return `a ${site} request (Sec-Fetch-Site: ${site}) may not change anything here`;
  }
  const origin = header(headers, 'origin')?.trim();
  if (origin === undefined || origin === '') return null;
  const host = header(headers, 'host')?.trim().toLowerCase();
  let originHost: string | null = null;
  try {
    const url = new URL(origin);
    if (url.protocol === 'http:' || url.protocol === 'https:') originHost = url.host;
  } catch {
    // `null` (a sandboxed frame, a redirect across sites) and anything unparsable.
  }
  if (originHost !== null && host !== undefined && originHost === host) return null;
  return `a request from ${JSON.stringify(origin).slice(0, 200)} (not this console's origin) may not change anything here`;
}

function contentType(req: IncomingMessage): string {
  return (header(req.headers, 'content-type') ?? '').split(';', 1)[0]?.trim().toLowerCase() ?? '';
}

export function guardApiRequest(req: IncomingMessage, info: TRPCRequestInfo): void {
  if (req.method === 'POST') {
    const reason = crossSiteReason(req.headers);
    if (reason !== null) throw new TRPCError({ code: 'FORBIDDEN', message: reason });
    const type = contentType(req);
    if (type !== 'application/json') {
      throw new TRPCError({
        code: 'UNSUPPORTED_MEDIA_TYPE',
        message: `the API takes application/json request bodies, not ${type === '' ? 'none' : type}`,
      });
    }
  }
  if (info.calls.length > MAX_BATCH_CALLS) {
    throw new TRPCError({
      code: 'BAD_REQUEST',
      message: `a batch holds at most ${MAX_BATCH_CALLS} calls; this one has ${info.calls.length}`,
    });
  }
}
