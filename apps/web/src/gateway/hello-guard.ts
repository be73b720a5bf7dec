/**
 * Which hellos get verified (a database read; for a token, a transaction), and when.
 *
 * Tokens and credential secrets are 256 random bits: no rate of guessing finds one, so this limit
 * does not exist to stop guessing. It bounds the work strangers can make the server do, and it
 * must never keep out an agent whose credential is valid: many agents share an address behind a
 * NAT or a proxy, and the server's own local agent dials 127.0.0.1, where any local user can
 * fail hellos too. So it limits failures, not addresses:
 *
 * - An address may have `maxFailures` hellos fail within `windowMs`. A hello being verified holds
 *   one of those places until it succeeds (then the place is free again), so parallel hellos
 *   cannot all start while the window has room for one.
 * - Past that, a hello from the address is refused unverified: a non-fatal `rate-limited` error
 *   with the seconds until a place frees, and close 1013; the agent redials with its backoff.
 *   The WebSocket handshake itself is never refused (it used to get 429, which locked every agent
 *   behind the address out for the window, repeatably).
 * - Except a credential this process has accepted before: its agent id and secret hash are kept
 *   (at most KNOWN_CREDENTIALS, least recently used forgotten first), and a hello presenting them
 *   is verified at once whatever its address did. Only the holder of the secret can present it.
 *   An agent this process has not accepted yet (a first enrollment, the first hello after a
 *   restart, one that used to reach another server process) waits for room in the window like
 *   a stranger.
 *
 * Memory stays bounded: per address at most `maxFailures` timestamps, at most MAX_ADDRESSES
 * addresses (the stalest forgotten first, which only hands it a fresh window).
 */
import type { HelloMessage } from '@vfio-fleet/core';
import { secretMatches } from './credentials';

export interface FailedHelloLimits {
  /** Failed hellos an address may have within `windowMs` before unknown agents' are refused. */
  maxFailures: number;
  windowMs: number;
}

export const DEFAULT_FAILED_HELLO_LIMITS: FailedHelloLimits = {
  maxFailures: 20,
  windowMs: 60_000,
};

/** Addresses tracked at most. */
const MAX_ADDRESSES = 10_000;
/** Credentials remembered at most (an agent id and a sha256 each: a few MB). */
const KNOWN_CREDENTIALS = 50_000;

interface AddressState {
  /** Times of the failures still in the window, oldest first. */
  failures: number[];
  /** Hellos being verified now: each holds a place until it is settled. */
  inFlight: number;
}

/** Failed hellos per address in a sliding window, with places reserved by hellos in flight. */
export class FailedHelloLimiter {
  private readonly addresses = new Map<string, AddressState>();

  constructor(
    private readonly limits: FailedHelloLimits,
    private readonly now: () => number = () => Date.now(),
    private readonly maxAddresses = MAX_ADDRESSES,
  ) {}

  /** Takes a place for a hello from `address` about to be verified; false when none is left. */
  tryReserve(address: string): boolean {
    const state = this.current(address);
    if (state.failures.length + state.inFlight >= this.limits.maxFailures) return false;
    state.inFlight += 1;
    this.touch(address, state);
    return true;
  }

  /**
   * Ends a reserved hello's verification: a failure keeps its place for the window, a success
   * gives it back. True when this failure used up the address's last place.
   */
  settle(address: string, failed: boolean): boolean {
    const state = this.current(address);
    state.inFlight = Math.max(0, state.inFlight - 1);
    if (failed) return this.add(address, state);
    this.touch(address, state);
    return false;
  }

  /** Counts a failure that held no place (a remembered credential that failed after all). */
  record(address: string): boolean {
    return this.add(address, this.current(address));
  }

  /** Seconds until the address has a place again (the refusal's retry hint; at least 1). */
  retryAfterSeconds(address: string): number {
    const oldest = this.current(address).failures[0];
    if (oldest === undefined) return 1;
    return Math.max(1, Math.ceil((oldest + this.limits.windowMs - this.now()) / 1000));
  }

  private add(address: string, state: AddressState): boolean {
    state.failures.push(this.now());
    // Only the newest maxFailures matter for the verdict.
    if (state.failures.length > this.limits.maxFailures) {
      state.failures.splice(0, state.failures.length - this.limits.maxFailures);
    }
    this.touch(address, state);
    return state.failures.length + state.inFlight >= this.limits.maxFailures;
  }

  /** The address's state with failures older than the window dropped (not stored). */
  private current(address: string): AddressState {
    const state = this.addresses.get(address) ?? { failures: [], inFlight: 0 };
    const cutoff = this.now() - this.limits.windowMs;
    while (state.failures[0] !== undefined && state.failures[0] <= cutoff) state.failures.shift();
    if (state.failures.length === 0 && state.inFlight === 0) this.addresses.delete(address);
    return state;
  }

  /** Stores the state as the most recent, or forgets it when empty; the stalest go past the cap. */
  private touch(address: string, state: AddressState): void {
    this.addresses.delete(address);
    if (state.failures.length === 0 && state.inFlight === 0) return;
    this.addresses.set(address, state);
    while (this.addresses.size > this.maxAddresses) {
      const stalest = this.addresses.keys().next();
      if (stalest.done === true) break;
      this.addresses.delete(stalest.value);
    }
  }
}

/** A hello let through to verification; `done` must be called once it is over, whatever happened. */
export interface HelloAdmission {
  /** The hello was rejected (unknown, wrong or revoked): counted against its address. */
  failed(): void;
  /** Verification is over. True when a failure used up the address's last place (log it once). */
  done(): boolean;
}

export class HelloGuard {
  /** agentId → the secret's hash, least recently used first. */
  private readonly known = new Map<string, string>();

  constructor(
    private readonly limiter: FailedHelloLimiter,
    private readonly maxKnown = KNOWN_CREDENTIALS,
  ) {}

  /** Lets the hello be verified now, or null: refuse it unverified (retryAfterSeconds says when). */
  admit(address: string, auth: HelloMessage['auth']): HelloAdmission | null {
    const known = auth.kind === 'credential' && this.isKnown(auth.agentId, auth.secret);
    if (!known && !this.limiter.tryReserve(address)) return null;
    let failed = false;
    let settled = false;
    return {
      failed: () => {
        failed = true;
        if (auth.kind === 'credential') this.forget(auth.agentId);
      },
      done: () => {
        if (settled) return false;
        settled = true;
        if (!known) return this.limiter.settle(address, failed);
        return failed && this.limiter.record(address);
      },
    };
  }

  retryAfterSeconds(address: string): number {
    return this.limiter.retryAfterSeconds(address);
  }

  /** A credential this process accepted (or issued): its hellos skip the address's limit. */
  remember(agentId: string, secretHash: string): void {
    this.known.delete(agentId);
    this.known.set(agentId, secretHash);
    while (this.known.size > this.maxKnown) {
      const oldest = this.known.keys().next();
      if (oldest.done === true) break;
      this.known.delete(oldest.value);
    }
  }

  forget(agentId: string): void {
    this.known.delete(agentId);
  }

  private isKnown(agentId: string, secret: string): boolean {
    const hash = this.known.get(agentId);
    return hash !== undefined && secretMatches(secret, hash);
  }
}
