/**
 * A counting semaphore: at most `limit` holders, the rest wait in arrival order. The gateway's
 * ingest (snapshots parsed and stored at once) and password hashing (scrypt calls on libuv's
 * threadpool) each hold one.
 *
 * With `maxWaiting`, an acquire that would queue behind that many others is refused at once with
 * a GateFullError: a caller that can retry (a login) gets a quick "busy" rather than an answer
 * after every queued job ahead of it.
 */
export class GateFullError extends Error {
  override readonly name = 'GateFullError';
}

export class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaiting = Number.POSITIVE_INFINITY,
  ) {}

  /** Holders now plus those waiting. */
  get load(): number {
    return this.active + this.waiting.length;
  }

  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new GateFullError(`${this.limit} running and ${this.waiting.length} waiting`);
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.active += 1;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter, so `active` only drops when none waits.
      if (next !== undefined) next();
      else this.active -= 1;
    };
  }
}
