/**
 * The one error type that crosses the agent's boundary. Anything the operator can act on (a bad
 * flag, an unknown device, a refused plan) is an AgentError with a stable `code` for scripts and
 * logs, and the process exit code it maps to; anything else is a bug and exits 1 with a stack.
 */

/** Exit codes are part of the CLI contract: scripts branch on them. */
export const EXIT_CODES = {
  ok: 0,
  /** Unexpected failure (a bug, or an I/O error that is not a host state). */
  failure: 1,
  /** The command line or an input was wrong: unknown flag, malformed address or modalias. */
  usage: 2,
  /** core refused the request (e.g. a rebind that would take down the host). */
  refused: 3,
  /** A rebind step failed and the rollback put every device back as it was. */
  rolledBack: 4,
  /** A rebind step failed and the rollback did not restore every device: look at the host. */
  failed: 5,
} as const;

export type ExitCode = (typeof EXIT_CODES)[keyof typeof EXIT_CODES];

export type AgentErrorCode =
  | 'usage'
  | 'invalid-argument'
  | 'root-not-found'
  | 'file-unreadable'
  | 'device-not-found'
  | 'plan-refused'
  | 'capture-target-not-empty'
  /** Another `run` holds the state dir (agent.lock). */
  | 'state-dir-in-use'
  /** A file of the state dir is damaged (the credential): never re-enrolled or re-run silently. */
  | 'state-damaged';

const EXIT_BY_CODE: Record<AgentErrorCode, ExitCode> = {
  usage: EXIT_CODES.usage,
  'invalid-argument': EXIT_CODES.usage,
  'root-not-found': EXIT_CODES.usage,
  'file-unreadable': EXIT_CODES.usage,
  'device-not-found': EXIT_CODES.usage,
  'plan-refused': EXIT_CODES.refused,
  'capture-target-not-empty': EXIT_CODES.usage,
  'state-dir-in-use': EXIT_CODES.failure,
  'state-damaged': EXIT_CODES.failure,
};

export interface AgentErrorOptions {
  /** Extra lines printed under the message (refusal reasons, remedies). */
  details?: readonly string[];
  /** Usage text to print after the message, for command-line mistakes. */
  usage?: string;
  cause?: unknown;
}

export class AgentError extends Error {
  override readonly name = 'AgentError';
  readonly exitCode: ExitCode;
  readonly details: readonly string[];
  readonly usage: string | null;

  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options: AgentErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.exitCode = EXIT_BY_CODE[code];
    this.details = options.details ?? [];
    this.usage = options.usage ?? null;
  }
}
