/**
 * The port's pre-auth edge below the WebSocket: HTTP upgrade requests and unfinished headers.
 *
 * Node hands an upgrade request's socket to the server's `upgrade` listeners and to nobody else,
 * without an `error` listener: one that no listener answers stays open for good (in CLOSE_WAIT
 * once the peer leaves), one file descriptor each, until the process can accept nothing, and a
 * reset on it would throw. So every upgrade request gets an answer or its socket destroyed:
 * answerUpgrade writes a short response, ends the socket and destroys it once the answer is
 * flushed, or after UPGRADE_ANSWER_MS whatever the peer does.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

/** How long an answered upgrade socket may take to flush its answer (a peer that never reads). */
export const UPGRADE_ANSWER_MS = 2_000;

/**
 * Options for the HTTP server (createServer) that bound a request still being received, upgrade
 * requests included: a client that sends half a header block is answered 408 and closed within
 * `headersTimeout` plus the checking interval (Node's defaults: 60 s, checked every 30 s).
 */
export const HTTP_SERVER_TIMEOUTS = {
  headersTimeout: 10_000,
  requestTimeout: 60_000,
  connectionsCheckingInterval: 1_000,
} as const;

/** Answers an upgrade request with `status` and a one-line text, then closes its socket for good. */
export function answerUpgrade(
  socket: Duplex,
  status: number,
  text: string,
  headers: Readonly<Record<string, string | number>> = {},
): void {
  // A reset while answering is the peer's business, never an uncaught 'error'.
  socket.on('error', () => undefined);
  const destroy = () => socket.destroy();
  const deadline = setTimeout(destroy, UPGRADE_ANSWER_MS);
  deadline.unref();
  socket.once('close', () => clearTimeout(deadline));
  if (socket.destroyed || !socket.writable) {
    destroy();
    return;
  }
  const body = `${text}\n`;
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ];
  // Destroyed once flushed: the server's sockets allow half-open connections, so an end() alone
  // would wait for the peer's FIN, which an attacker never sends.
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`, destroy);
}
