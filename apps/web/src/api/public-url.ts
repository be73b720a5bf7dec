/**
 * This server's URL as an agent on another host should dial it: what /install.sh and the command
 * lines tokens.create prints put in a script an admin runs as root. So it is never text a caller
 * may choose freely:
 *
 * - VFIO_FLEET_PUBLIC_URL, when set, is the answer (an http(s) origin, checked at start);
 * - else the Host header, which must be a plain hostname or IP address with an optional port;
 * - X-Forwarded-Host and X-Forwarded-Proto count only behind a trusted proxy
 *   (VFIO_FLEET_TRUST_PROXY=1), which sets them; without one they are whatever the client sent.
 *
 * Anything else is a ServerError `bad-request` (400) naming the header, not a URL with junk in it.
 */
import type { IncomingMessage } from 'node:http';
import { z } from 'zod';
import { ServerError } from '../errors';

export interface PublicUrlOptions {
  /** VFIO_FLEET_PUBLIC_URL, already checked by publicUrlSchema. */
  configured?: string;
  /** VFIO_FLEET_TRUST_PROXY=1: the proxy's X-Forwarded-Host and X-Forwarded-Proto count. */
  trustProxy: boolean;
}

/** A DNS name or IPv4 address, or an IPv6 address in brackets; then an optional port. */
const HOST =
  /^(?<name>[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::(?<port>\d{1,5}))?$/;

/** VFIO_FLEET_PUBLIC_URL: an http(s) URL with nothing but a scheme, host and port; its origin. */
export const publicUrlSchema = z.string().transform((value, ctx) => {
  const url = URL.canParse(value) ? new URL(value) : null;
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    ctx.addIssue({
      code: 'custom',
      message: 'VFIO_FLEET_PUBLIC_URL must be an http:// or https:// URL',
    });
    return z.NEVER;
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '') {
    ctx.addIssue({
      code: 'custom',
      message:
        'VFIO_FLEET_PUBLIC_URL must be an origin such as https://fleet.example.com:3000 (no path, query or user)',
    });
    return z.NEVER;
  }
  return url.origin;
});

export function publicUrl(req: IncomingMessage, options: PublicUrlOptions): string {
  if (options.configured !== undefined) return options.configured;
  const forwardedHost = options.trustProxy
    ? proxyValue(req.headers['x-forwarded-host'])
    : undefined;
  const host = forwardedHost ?? req.headers.host?.trim();
  const header = forwardedHost === undefined ? 'Host' : 'X-Forwarded-Host';
  if (host === undefined || host === '') {
    throw new ServerError('bad-request', `the request has no ${header} header`);
  }
  const match = HOST.exec(host);
  const port = Number(match?.groups?.port ?? '80');
  if (match === null || port < 1 || port > 65_535) {
    throw new ServerError(
      'bad-request',
      `the ${header} header is not a hostname or IP address with an optional port; set VFIO_FLEET_PUBLIC_URL to this server's URL`,
    );
  }
  return `${scheme(req, options.trustProxy)}://${host}`;
}

function scheme(req: IncomingMessage, trustProxy: boolean): 'http' | 'https' {
  const forwarded = trustProxy ? proxyValue(req.headers['x-forwarded-proto']) : undefined;
  if (forwarded === undefined) {
    return (req.socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http';
  }
  const proto = forwarded.toLowerCase();
  if (proto === 'http' || proto === 'https') return proto;
  throw new ServerError('bad-request', 'the X-Forwarded-Proto header is neither http nor https');
}

/**
 * The last of a forwarded header's comma-separated values: the one the trusted proxy in front
 * set or appended (as remoteAddress reads X-Forwarded-For); earlier ones came from the client.
 */
function proxyValue(header: string | string[] | undefined): string | undefined {
  const joined = Array.isArray(header) ? header.join(',') : header;
  const last = joined?.split(',').at(-1)?.trim();
  return last === '' ? undefined : last;
}
