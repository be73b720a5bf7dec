/**
 * One `vfio-fleet-agent run` per state dir. Two agents on one state dir enroll as the same host
 * and replace each other's connection on every dial (each time with a full snapshot), and their
 * job records and persisted bindings race: the second is refused at start, naming the first.
 */
import {
  DirectoryLockedError,
  errnoOf,
  type HeldLock,
  type LockInfo,
  lockDirectory,
} from '@vfio-fleet/local-state';
import { AgentError } from '../errors';
import type { Logger } from '../logger';

/** The lock file in the state dir (apps/web's local agent reads it too). */
export const STATE_LOCK_FILE = 'agent.lock';

/** The lock, or null when the state dir cannot hold one (read-only): that is logged, not fatal. */
export async function lockStateDir(
  stateDir: string,
  info: LockInfo,
  logger: Logger,
): Promise<HeldLock | null> {
  try {
    return await lockDirectory(stateDir, {
      name: STATE_LOCK_FILE,
      purpose: 'the agent state directory',
      hint: 'another `vfio-fleet-agent run` uses it (two would take turns replacing each other as this host); stop that one first, or give this one its own --state-dir',
      // The state dir is on this host's own disk: a lock from before a rename and reboot is stale.
      local: true,
      info,
    });
  } catch (error) {
    if (error instanceof DirectoryLockedError) {
      throw new AgentError('state-dir-in-use', `run: ${error.message}`, { cause: error });
    }
    const code = errnoOf(error);
    if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') {
      logger.warn(
        { stateDir, code },
        'cannot write a lock file in the state dir: a second agent on it would not be refused',
      );
      return null;
    }
    throw error;
  }
}
