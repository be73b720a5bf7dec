/**
 * The security headers every response of the server carries (server.ts sets them before routing,
 * so the API, health, metrics, downloads, Next.js pages and error answers all have them):
 *
 * - `Content-Security-Policy`: for everything but Next.js, nothing may load or run at all. A page
 *   Next.js renders gets a fresh nonce per request: its scripts run only with it ('strict-dynamic'
 *   lets them load Next's own chunks), so an injected inline script does not. Next.js reads the
 *   nonce from the request's `content-security-policy` header and puts it on every script it
 *   emits; the pages are rendered per request for that (app/layout.tsx). Styles allow
 *   'unsafe-inline': React renders `style` attributes, and a style cannot run code.
 *   `frame-ancestors 'none'`, `object-src 'none'`, `base-uri 'self'` and `form-action 'self'`.
 * - `X-Frame-Options: DENY` (frame-ancestors for older browsers), `X-Content-Type-Options:
 *   nosniff`, `Referrer-Policy: same-origin` (not no-referrer: with it, browsers without
 *   Sec-Fetch-Site send `Origin: null` on the console's own POSTs, which the API then refuses).
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';

const NO_CONTENT_POLICY = [
  "default-src 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

export function pagePolicy(nonce: string): string {
  return [
    "default-src 'self'",
    `script-src 'self' 'nonce-${nonce}' 'strict-dynamic'`,
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
  ].join('; ');
}

export function setSecurityHeaders(res: ServerResponse): void {
  res.setHeader('Content-Security-Policy', NO_CONTENT_POLICY);
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'same-origin');
}

/**
 * For a request Next.js answers: the page policy with a fresh nonce on the response, and on the
 * request, where Next.js reads it (a client's own `content-security-policy` header is replaced,
 * never believed).
 */
export function preparePageRequest(req: IncomingMessage, res: ServerResponse): void {
  const policy = pagePolicy(randomBytes(16).toString('base64'));
  req.headers['content-security-policy'] = policy;
  delete req.headers['content-security-policy-report-only'];
  res.setHeader('Content-Security-Policy', policy);
}
