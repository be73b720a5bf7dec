/**
 * Dying with the process that started this agent: `run --parent-fd N` reads an inherited pipe
 * whose other end only that process holds. When it exits, however it exits (`kill -9`, the OOM
 * killer), the kernel closes its end and this side reads end-of-file. Linux's PR_SET_PDEATHSIG is
 * not reachable from Node, and polling process.ppid would notice only after a delay.
 *
 * Only for an agent run as a child (the server's local agent); an agent under systemd has no such
 * parent and gets no --parent-fd.
 */
import net from 'node:net';
import { type LockInfo, processStartTime } from '@vfio-fleet/local-state';

/** Calls `gone` once the pipe on `fd` ends or fails; returns a function that stops watching. */
export function watchParentPipe(fd: number, gone: () => void): () => void {
  const pipe = new net.Socket({ fd, readable: true, writable: false });
  let fired = false;
  const fire = (): void => {
    if (fired) return;
    fired = true;
    gone();
  };
  // Nothing is ever sent; reading is what lets the end-of-file arrive.
  pipe.on('data', () => undefined);
  pipe.once('end', fire);
  pipe.once('close', fire);
  pipe.once('error', fire);
  // The watch alone must not keep a stopped agent alive.
  pipe.unref();
  return () => {
    fired = true;
    pipe.destroy();
  };
}

/** What the state dir's lock says about the parent, so a later server can tell an orphan. */
export function parentLockInfo(): LockInfo {
  return { parentPid: process.ppid, parentStartTime: processStartTime(process.ppid) };
}
