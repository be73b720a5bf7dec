/**
 * Finding the local agent's state dir held by an agent that is not ours. The agent holds
 * `agent.lock` in its state dir while it runs (apps/agent's state-lock.ts) and records the server
 * that started it. An agent whose server is gone (killed with SIGKILL before agents had
 * --parent-fd, or one still stopping) is an orphan: it would hold this host's connection against
 * the new local agent, so it is stopped (SIGTERM, then SIGKILL). One whose server still runs
 * (another server started in the same directory, on PostgreSQL) is left alone.
 */
import path from 'node:path';
import {
  errnoOf,
  type LockOwner,
  liveness,
  type ProcessIdentity,
  readLock,
} from '@vfio-fleet/local-state';
import type { Logger } from './logger';

/** The agent's lock file in its state dir (apps/agent's STATE_LOCK_FILE). */
export const AGENT_LOCK_FILE = 'agent.lock';
const POLL_MS = 100;

export type StateDirClaim =
  | { kind: 'free' }
  /** A live agent of another live server has it (or one being started right now). */
  | { kind: 'busy'; message: string };

/** Frees the state dir of an orphaned agent, if one holds it; says when someone else's does. */
export async function claimStateDir(
  stateDir: string,
  logger: Logger,
  graceMs: number,
): Promise<StateDirClaim> {
  const held = await readLock(path.join(stateDir, AGENT_LOCK_FILE), { local: true });
  if (held === null || held.liveness === 'dead') return { kind: 'free' };
  const { owner } = held;
  if (owner === null) {
    return { kind: 'busy', message: `an agent is starting on ${stateDir} right now` };
  }
  const parent = parentOf(owner);
  if (
    parent !== null &&
    parent.pid !== process.pid &&
    liveness(parent, { local: true }) === 'alive'
  ) {
    return {
      kind: 'busy',
      message: `${stateDir} is held by pid ${owner.pid}, the local agent of another server (pid ${parent.pid}) still running`,
    };
  }
  logger.warn(
    { orphanPid: owner.pid, serverPid: parent?.pid ?? null, stateDir },
    'stopping an orphaned local agent left by a server that is gone',
  );
  try {
    await stop(owner, graceMs);
  } catch (error) {
    return {
      kind: 'busy',
      message: `cannot stop the orphaned local agent (pid ${owner.pid}): ${errnoOf(error) ?? String(error)}`,
    };
  }
  return { kind: 'free' };
}

function parentOf(owner: LockOwner): ProcessIdentity | null {
  const { parentPid, parentStartTime } = owner.info;
  if (typeof parentPid !== 'number') return null;
  return {
    pid: parentPid,
    startTime: typeof parentStartTime === 'string' ? parentStartTime : null,
    hostname: owner.hostname,
    bootId: owner.bootId,
  };
}

/** SIGTERM, and SIGKILL if it has not gone after `graceMs`; resolves once it is gone. */
async function stop(owner: LockOwner, graceMs: number): Promise<void> {
  const gone = () => liveness(owner, { local: true }) === 'dead';
  process.kill(owner.pid, 'SIGTERM');
  if (await waitUntil(gone, graceMs)) return;
  process.kill(owner.pid, 'SIGKILL');
  await waitUntil(gone, graceMs);
}

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() >= end) return false;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  return true;
}
