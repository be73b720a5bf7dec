// Reading a tree the way another process does, for attributes the kernel model makes hang while
// a write holds their device's lock (kernel-model-device-lock).
import { type ChildProcess, spawn } from 'node:child_process';
import { lstat } from 'node:fs/promises';
import path from 'node:path';

const readers = new Set<ChildProcess>();

/** Ends the readers a test left blocked (call from afterEach). */
export function killReaders(): void {
  for (const child of readers) if (child.exitCode === null) child.kill('SIGKILL');
  readers.clear();
}

/** `cat` in a child process: resolves with what it read, once it could read. */
export function catFile(root: string, rel: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('cat', [path.join(root, rel)], { stdio: ['ignore', 'pipe', 'ignore'] });
    readers.add(child);
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
    });
    child.on('error', reject);
    child.on('close', () => {
      readers.delete(child);
      resolve(out);
    });
  });
}

/** Waits until `check` holds: the model works through the filesystem, step by step. */
export async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 500; i += 1) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('the condition never held');
}

export function isFifo(root: string, rel: string): Promise<boolean> {
  return lstat(path.join(root, rel)).then(
    (s) => s.isFIFO(),
    () => false,
  );
}
