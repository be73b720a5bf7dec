/**
 * Lets the event loop run what waits (a health check, a page's query, another agent's frame)
 * before going on. A snapshot at the protocol's limit (4,096 devices, 8 MiB) takes a few hundred
 * milliseconds of CPU in each step of its ingest (parse, assess, hash, encode for the database);
 * yielding between the steps keeps the server answering while several such snapshots arrive.
 */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Runs `steps` to its end, yielding to the event loop at each of its pauses. */
export async function finishYielding<T>(steps: Generator<void, T, void>): Promise<T> {
  for (;;) {
    const step = steps.next();
    if (step.done === true) return step.value;
    await yieldToEventLoop();
  }
}
