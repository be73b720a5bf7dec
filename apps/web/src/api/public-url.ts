/**
 * This server's URL as the caller reached it (Host header, https when the socket is TLS or a proxy
 * says so): what an agent on another host should connect to, for the command line tokens.create
 * prints. The Host header is the caller's to choose, so only a plain host[:port] is accepted; it
 * ends up in a shell command an admin copies.
 */
import type { IncomingMessage } from 'node:http';
import { isSecureRequest } from '../auth/sessions';
import { ServerError } from '../errors';

const HOST_HEADER = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

export function publicUrl(req: IncomingMessage): string {
  const forwardedHost = req.headers['x-forwarded-host'];
  const host =
    (Array.isArray(forwardedHost) ? forwardedHost[0] : forwardedHost) ?? req.headers.host;
  const first = host?.split(',')[0]?.trim();
  if (first === undefined || !HOST_HEADER.test(first)) {
    throw new ServerError('bad-request', 'the request has no usable Host header');
  }
  return `${isSecureRequest(req) ? 'https' : 'http'}://${first}`;
}
