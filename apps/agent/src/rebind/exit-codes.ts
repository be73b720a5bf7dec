/**
 * Exit status of the commands that change bindings: a script can tell "nothing changed, host as
 * before" (4, rolled back) from "the host is in between" (5, rollback incomplete).
 */
import { EXIT_CODES, type ExitCode } from '../errors';
import type { JobStatus } from './job-store';

export function exitCodeFor(status: JobStatus): ExitCode {
  switch (status) {
    case 'succeeded':
      return EXIT_CODES.ok;
    case 'refused':
      return EXIT_CODES.refused;
    case 'rolled_back':
      return EXIT_CODES.rolledBack;
    case 'failed':
      return EXIT_CODES.failed;
  }
}
