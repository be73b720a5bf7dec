/**
 * Exit codes of the commands that change bindings. They extend the agent's EXIT_CODES (0 ok,
 * 1 failure, 2 usage, 3 refused) with the two outcomes only a rebind has, so a script can tell
 * "nothing changed, host as before" (4) from "the host is in between" (5).
 */
import type { Command, CommandContext } from '../commands/command';
import { EXIT_CODES, type ExitCode } from '../errors';
import type { JobStatus } from './job-store';

export const REBIND_EXIT_CODES = {
  ...EXIT_CODES,
  /** A step failed and the rollback put every device back as it was. */
  rolledBack: 4,
  /** A step failed and the rollback did not restore every device: look at the host. */
  failed: 5,
} as const;

export type CliExitCode = ExitCode | (typeof REBIND_EXIT_CODES)['rolledBack' | 'failed'];

/** A command whose run may end in a rebind outcome (bind, restore). */
export interface RebindCommand extends Omit<Command, 'run'> {
  run(args: string[], ctx: CommandContext): Promise<CliExitCode>;
}

export function exitCodeFor(status: JobStatus): CliExitCode {
  switch (status) {
    case 'succeeded':
      return REBIND_EXIT_CODES.ok;
    case 'refused':
      return REBIND_EXIT_CODES.refused;
    case 'rolled_back':
      return REBIND_EXIT_CODES.rolledBack;
    case 'failed':
      return REBIND_EXIT_CODES.failed;
  }
}
