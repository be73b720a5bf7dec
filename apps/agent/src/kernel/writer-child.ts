/**
 * The sysfs writer child's side: for each request one open(2) and one write(2) (or one read of a
 * lock-taking attribute), then the answer.
 * A write the kernel blocks (a device lock held by a VM's open) blocks only this process; the
 * agent abandons it and the child dies when the kernel lets the write return.
 */
import { open, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { type WriteRequest, type WriterMessage, writeRequestSchema } from './writer-protocol';

export async function runWriterChild(
  input: NodeJS.ReadableStream,
  output: NodeJS.WritableStream,
): Promise<void> {
  const send = (message: WriterMessage): void => {
    output.write(`${JSON.stringify(message)}\n`);
  };
  send({ kind: 'ready' });
  const inFlight = new Set<Promise<void>>();
  for await (const line of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    if (line.trim() === '') continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = null;
    }
    const request = writeRequestSchema.safeParse(parsed);
    // Only the parent writes here; a line it did not mean is a bug, not something to guess at.
    if (!request.success) throw new Error(`sysfs writer: bad request ${line.slice(0, 200)}`);
    const work = perform(request.data).then(send);
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  }
  // The parent closed stdin (it exited or abandoned this child): finish what the kernel has.
  await Promise.all(inFlight);
}

async function perform(request: WriteRequest): Promise<WriterMessage> {
  const data = Buffer.from(request.value, 'utf8');
  try {
    if (request.op === 'read') {
      return {
        kind: 'text',
        id: request.id,
        text: await readFile(request.file, { encoding: 'utf8', flag: request.flags }),
      };
    }
    const handle = await open(request.file, request.flags);
    try {
      // One write(2): a sysfs store() sees exactly one buffer per call.
      const { bytesWritten } = await handle.write(data, 0, data.length, null);
      return { kind: 'done', id: request.id, bytesWritten };
    } finally {
      await handle.close().catch(() => undefined);
    }
  } catch (error) {
    const code = typeof error === 'object' && error !== null ? Reflect.get(error, 'code') : null;
    return {
      kind: 'error',
      id: request.id,
      code: typeof code === 'string' ? code : null,
      message: error instanceof Error ? error.message : String(error),
    };
  }
}
