/**
 * The failed-login limits, applied before a password is hashed. An attempt is counted against its
 * address and its username when it starts, not when its hash comes back wrong: checked first and
 * counted after the scrypt await, every concurrent attempt (parallel requests, a tRPC batch) passed
 * the check before the first one was counted. A right password takes the address's count back and
 * forgives the username (only failures count); an attempt that got no verdict (the server was too
 * busy to hash, the database failed) takes both back.
 *
 * One address also hashes at most a few passwords at once, so it cannot fill the server-wide
 * hashing queue (auth/passwords.ts) ahead of everyone else's logins.
 */
import type { SlidingWindowLimiter } from './rate-limit';

export interface LoginLimiters {
  byIp: SlidingWindowLimiter;
  byUsername: SlidingWindowLimiter;
}

export interface LoginAttempt {
  /** The password was wrong or the user unknown: the attempt stays counted. */
  failed(): void;
  /** The password was right. */
  succeeded(): void;
  /** No verdict: as if it never happened. */
  abandoned(): void;
}

export type LoginAdmission =
  | { allowed: true; attempt: LoginAttempt }
  | { allowed: false; retryAfterSeconds: number; message: string };

const DEFAULT_MAX_IN_FLIGHT_PER_ADDRESS = 4;

export class LoginAttempts {
  private readonly inFlight = new Map<string, number>();

  constructor(
    private readonly limiters: LoginLimiters,
    private readonly maxInFlightPerAddress = DEFAULT_MAX_IN_FLIGHT_PER_ADDRESS,
  ) {}

  /** Admits and counts one attempt by `address` for `username`, or says why not. */
  begin(address: string, username: string): LoginAdmission {
    const userKey = username.toLowerCase();
    const running = this.inFlight.get(address) ?? 0;
    if (running >= this.maxInFlightPerAddress) {
      return {
        allowed: false,
        retryAfterSeconds: 1,
        message: `${running} logins from this address are still being checked; try again in 1 s`,
      };
    }
    const byIp = this.limiters.byIp.reserve(address);
    if (!byIp.allowed) return tooMany(byIp.retryAfterSeconds);
    const byUsername = this.limiters.byUsername.reserve(userKey);
    if (!byUsername.allowed) {
      byIp.cancel();
      return tooMany(byUsername.retryAfterSeconds);
    }
    this.inFlight.set(address, running + 1);
    let done = false;
    const finish = (then: () => void) => {
      if (done) return;
      done = true;
      const left = (this.inFlight.get(address) ?? 1) - 1;
      if (left <= 0) this.inFlight.delete(address);
      else this.inFlight.set(address, left);
      then();
    };
    return {
      allowed: true,
      attempt: {
        failed: () => finish(() => {}),
        succeeded: () =>
          finish(() => {
            byIp.cancel();
            this.limiters.byUsername.reset(userKey);
          }),
        abandoned: () =>
          finish(() => {
            byIp.cancel();
            byUsername.cancel();
          }),
      },
    };
  }
}

function tooMany(retryAfterSeconds: number): LoginAdmission {
  return {
    allowed: false,
    retryAfterSeconds,
    message: `too many failed logins; try again in ${retryAfterSeconds} s`,
  };
}
