/**
 * Telling whether the process that wrote a pid into a file is still the one running. A pid alone
 * is not enough: after a crash the pid can be reused by any other process (in a container, pid 1
 * or 7 comes back on every start). On Linux the kernel's start time of a pid (/proc/PID/stat,
 * field 22) together with the boot id tells the same process from a later one; elsewhere only
 * "some process has this pid" can be checked.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/** Who holds something, as written into a lock file. */
export interface ProcessIdentity {
  pid: number;
  /** Clock ticks after boot at which the process started (Linux); null where unknown. */
  startTime: string | null;
  hostname: string;
  /** /proc/sys/kernel/random/boot_id (Linux); null where unknown. */
  bootId: string | null;
}

/** 'unknown': written on another host (a shared volume), where this one cannot look. */
export type Liveness = 'alive' | 'dead' | 'unknown';

export function errnoOf(error: unknown): string | null {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') {
    return error.code;
  }
  return null;
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errnoOf(error) === 'EPERM';
  }
}

/** The kernel's start time of `pid`, or null (no such process, or no /proc). */
export function processStartTime(pid: number): string | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // Field 2 (the command name) may hold spaces and parentheses: count from the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  const start = fields[19];
  return start !== undefined && /^\d+$/.test(start) ? start : null;
}

let bootIdCache: string | null | undefined;

export function bootId(): string | null {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() || null;
    } catch {
      bootIdCache = null;
    }
  }
  return bootIdCache;
}

/** This process, or another one of this host by pid. */
export function identityOf(pid: number = process.pid): ProcessIdentity {
  return { pid, startTime: processStartTime(pid), hostname: hostname(), bootId: bootId() };
}

/**
 * Whether the process `who` describes still runs. Another hostname on the same boot is another
 * container on this kernel, whose pids this one cannot see; another hostname and boot is another
 * machine (a shared volume), or this one renamed and rebooted: `unknown` either way, unless the
 * caller knows the directory is on a local disk of this machine (`local`).
 */
export function liveness(who: ProcessIdentity, options: { local?: boolean } = {}): Liveness {
  const boot = bootId();
  const sameHost = who.hostname === hostname() || options.local === true;
  if (who.bootId !== null && boot !== null && who.bootId !== boot) {
    return sameHost ? 'dead' : 'unknown';
  }
  if (!sameHost) return 'unknown';
  if (!processAlive(who.pid)) return 'dead';
  if (who.startTime === null) return 'alive';
  const now = processStartTime(who.pid);
  // The pid runs but started at another time: a different process that got the same pid.
  return now === null || now === who.startTime ? 'alive' : 'dead';
}
