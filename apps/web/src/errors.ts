/**
 * The server's one error type at its boundaries: a stable machine code plus a message safe to show
 * the peer (an agent, later an API caller). Anything else that escapes is a bug and is reported as
 * `internal` without its details.
 */
export type ServerErrorCode =
  | 'bad-config'
  | 'auth-failed'
  | 'protocol-violation'
  | 'unsupported-protocol'
  | 'invalid-message'
  | 'internal'
  // API callers (the tRPC layer maps each to an HTTP status):
  | 'bad-request'
  | 'unauthorized'
  | 'forbidden'
  | 'not-found'
  /** A rule of the current state refuses it (group busy, job already finished, stale preview). */
  | 'conflict'
  | 'rate-limited';

export class ServerError extends Error {
  override readonly name = 'ServerError';

  constructor(
    readonly code: ServerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
