/**
 * A counting semaphore: at most `limit` holders, the rest wait in arrival order (the gateway's
 * ingest gate: see GATED_FRAME_BYTES in agent-gateway.ts).
 */
export class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}

  async acquire(): Promise<() => void> {
    if (this.active >= this.limit) {
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
