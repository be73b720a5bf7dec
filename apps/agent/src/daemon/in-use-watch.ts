/**
 * Between full scans, watches what can change without anyone telling the agent: a VM starting or
 * stopping on a vfio device. It reads only `enable` of the devices the last scan found on a vfio
 * driver (a few attribute reads, no /proc), and asks for a rescan when one differs from what that
 * scan reported; the rescan then sends a delta, and nothing when nothing changed. Who holds a
 * device is read by the rescan (read-holders), not here.
 */
import type { HostFs } from '../host-fs';
import { type HolderCandidate, readEnabled } from '../inventory/read-holders';
import type { Logger } from '../logger';
import type { Clock, TimerHandle } from './clock';

/** How often a VM's start or stop is looked for: it reaches the server within a few seconds. */
export const IN_USE_POLL_MS = 2000;

export interface WatchedDevice extends HolderCandidate {
  inUse: boolean;
}

export interface InUseWatchOptions {
  fs: HostFs;
  /** The devices of the last scan; null before the first. */
  devices: () => readonly WatchedDevice[] | null;
  /** A device's use changed: rescan (InventoryStream.rescanNow). */
  changed: () => void;
  intervalMs: number;
  clock: Clock;
  logger: Logger;
}

export class InUseWatch {
  private timer: TimerHandle | null = null;
  private running = false;
  private polling: Promise<void> | null = null;
  /** What was last logged, so an agent offline (no rescan updates the devices) logs it once. */
  private logged = '';

  constructor(private readonly options: InUseWatchOptions) {}

  start(): void {
    this.running = true;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    await this.polling;
  }

  /** One look: true when a device's use differs from the last scan (and a rescan was asked). */
  async poll(): Promise<boolean> {
    const devices = this.options.devices();
    if (devices === null) return false;
    const enabled = await readEnabled(this.options.fs, devices);
    const moved = devices.filter((d) => {
      const now = enabled.get(d.address);
      return now !== undefined && now !== d.inUse;
    });
    const what = moved.map((d) => `${d.address}: ${d.inUse ? 'released' : 'taken'}`);
    if (moved.length > 0 && what.join() !== this.logged) {
      this.options.logger.info({ devices: what }, 'vfio device use changed; rescanning');
    }
    this.logged = what.join();
    if (moved.length === 0) return false;
    this.options.changed();
    return true;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.polling = this.poll()
        .then(() => undefined)
        .catch((error: unknown) => {
          this.options.logger.warn({ err: error }, 'reading vfio device use failed');
        })
        .finally(() => {
          this.polling = null;
          this.schedule();
        });
    }, this.options.intervalMs);
  }
}
