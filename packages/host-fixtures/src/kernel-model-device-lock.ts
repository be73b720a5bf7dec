/**
 * The device lock as readers see it. Some attributes' show() takes the device lock
 * (driver_override_show in pci-sysfs.c, sriov_numvfs_show in iov.c), so while a write holds that
 * lock without end (vfio's remove() waiting for a VM), every read of them hangs (the shared notes
 * measured it on 6.1; sriov_totalvfs and the rest read fine). The agent reads the tree through the
 * real filesystem, so the model makes such a read hang for real: it swaps those files for FIFOs
 * that it keeps open read-write (an open for reading returns, the read blocks) and, once the lock
 * is let go, puts the regular file back and writes the value into the FIFO, so a reader already
 * blocked gets it then, as on the kernel. Two readers blocked at once: the first gets the value,
 * the others an empty read. The model's own reads see the value (SysTree asks `valueOf`).
 */
import { execFile } from 'node:child_process';
import { type FileHandle, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The attributes whose show() takes the device lock. */
export const LOCKED_ATTRIBUTES = ['driver_override', 'sriov_numvfs'] as const;

interface Swapped {
  value: string;
  fifo: FileHandle;
  /** Locks taken on the device (the same device can be locked by two waits at once). */
  count: number;
}

/** The files of one kernel (one root) swapped for FIFOs, by absolute path. */
export class LockedFiles {
  private readonly swapped = new Map<string, Swapped>();
  private scratch = 0;

  constructor(private readonly root: string) {}

  /** The value a swapped file holds; undefined when the file is not swapped. */
  valueOf(abs: string): string | undefined {
    return this.swapped.get(abs)?.value;
  }

  /**
   * Takes the device lock on the device at `devicePath` (root-relative): its lock-taking
   * attributes hang for readers until the returned unlock runs.
   */
  async lock(devicePath: string): Promise<() => Promise<void>> {
    const taken: string[] = [];
    for (const name of LOCKED_ATTRIBUTES) {
      const abs = path.join(this.root, ...devicePath.split('/'), name);
      const known = this.swapped.get(abs);
      if (known !== undefined) {
        known.count += 1;
        taken.push(abs);
        continue;
      }
      let value: string;
      try {
        value = await readFile(abs, 'utf8');
      } catch {
        continue;
      }
      // Made aside and renamed over the file: a reader never finds the attribute missing.
      const staging = this.staging();
      await mkdir(path.dirname(staging), { recursive: true });
      await rm(staging, { force: true });
      await run('mkfifo', ['-m', '644', staging]);
      // O_RDWR on a FIFO never blocks, and keeps a writer present so readers block in read().
      const fifo = await open(staging, 'r+');
      await rename(staging, abs);
      this.swapped.set(abs, { value, fifo, count: 1 });
      taken.push(abs);
    }
    let unlocked = false;
    return async () => {
      if (unlocked) return;
      unlocked = true;
      for (const abs of taken) await this.unlockFile(abs);
    };
  }

  /** A scratch name beside the model's state (same filesystem, so rename is atomic). */
  private staging(): string {
    this.scratch += 1;
    return path.join(this.root, '.kernel-model', `swap-${process.pid}-${this.scratch}`);
  }

  private async unlockFile(abs: string): Promise<void> {
    const swapped = this.swapped.get(abs);
    if (swapped === undefined) return;
    swapped.count -= 1;
    if (swapped.count > 0) return;
    this.swapped.delete(abs);
    try {
      // The file comes back first: a reader that opens after this reads the file.
      const staging = this.staging();
      await mkdir(path.dirname(staging), { recursive: true });
      await writeFile(staging, swapped.value);
      await rename(staging, abs).catch(async (error: unknown) => {
        // The device went while locked (a VF removed): nothing to put back.
        await rm(staging, { force: true });
        if (!isMissing(error)) throw error;
      });
      await swapped.fifo.write(swapped.value);
    } finally {
      // The last writer closing ends a blocked read (with what was written, or empty).
      await swapped.fifo.close();
    }
  }

  /** A value the model sets while the file is locked: what blocked readers get on unlock. */
  update(abs: string, value: string): boolean {
    const swapped = this.swapped.get(abs);
    if (swapped === undefined) return false;
    swapped.value = value;
    return true;
  }
}

function isMissing(error: unknown): boolean {
  return error instanceof Error && Reflect.get(error, 'code') === 'ENOENT';
}
