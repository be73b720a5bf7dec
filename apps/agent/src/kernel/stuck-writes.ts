/**
 * The sysfs writes this process abandoned because the kernel did not answer them in time: one
 * registry per process, so the scan, the executor and the daemon agree on which devices the agent
 * must not touch. A write blocked in the kernel (D state) holds the device lock, and every read of
 * a lock-taking attribute of that device would block behind it, so nothing reads such a device
 * until the writer process that made the write has exited (the write returned).
 */
import path from 'node:path';
import { normalizePciAddress, PCI_ADDRESS_PATTERN } from '@vfio-fleet/core';

export interface StuckWrite {
  /** The agent's root (`/` on a live host): fixture roots in one process do not mix. */
  root: string;
  /** The PCI function the write is about, or null when neither path nor value names one. */
  address: string | null;
  path: string;
  value: string;
  /**
   * `read`: a read of a lock-taking attribute that did not return, so the device's lock is held
   * by someone else's blocked write (an operator's `echo > unbind`).
   */
  operation: 'write' | 'read';
  /** ISO time the write was sent to the kernel. */
  since: string;
}

export type StuckListener = (write: StuckWrite, event: 'stuck' | 'cleared') => void;

const DEVICE_PATH = /^\/sys\/bus\/pci\/devices\/([^/]+)\//;

/**
 * Which device a write concerns: `devices/<address>/...` by its path, `drivers/<d>/unbind`,
 * `bind` and `drivers_probe` by the address written.
 */
export function writeAddress(hostPath: string, value: string): string | null {
  const fromPath = DEVICE_PATH.exec(hostPath)?.[1];
  const candidate = fromPath ?? value.trim();
  return PCI_ADDRESS_PATTERN.test(candidate) ? normalizePciAddress(candidate) : null;
}

/** `"0000:01:00.0" to /sys/bus/pci/drivers/nvme/unbind (since 2026-...)` */
export function describeStuckWrite(write: StuckWrite): string {
  if (write.operation === 'read') {
    return `a read of ${write.path} (since ${write.since}; the device's lock is held, likely by another process's write stuck in the kernel)`;
  }
  return `the write of ${JSON.stringify(write.value)} to ${write.path} (since ${write.since})`;
}

export class StuckWrites {
  private readonly entries = new Set<StuckWrite>();
  private readonly listeners = new Set<StuckListener>();

  /** Records a write as stuck; the returned function clears it (once its writer has exited). */
  add(write: Omit<StuckWrite, 'root'> & { root: string }): () => void {
    const entry: StuckWrite = { ...write, root: path.resolve(write.root) };
    this.entries.add(entry);
    this.emit(entry, 'stuck');
    return () => {
      if (this.entries.delete(entry)) this.emit(entry, 'cleared');
    };
  }

  /** The oldest stuck write on `address` under `root`, or null when the device is free. */
  forDevice(root: string, address: string): StuckWrite | null {
    const resolved = path.resolve(root);
    for (const entry of this.entries) {
      if (entry.root === resolved && entry.address === address) return entry;
    }
    return null;
  }

  /** Resolves once none of `addresses` under `root` is stuck, or after `ms`. */
  waitForClear(root: string, addresses: readonly string[], ms: number): Promise<void> {
    const busy = () => addresses.some((a) => this.forDevice(root, a) !== null);
    if (!busy()) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stop();
        resolve();
      };
      const timer = setTimeout(done, ms);
      const stop = this.subscribe(() => {
        if (!busy()) done();
      });
    });
  }

  list(): StuckWrite[] {
    return [...this.entries];
  }

  /** Listens for writes becoming stuck and clearing; returns the unsubscribe. */
  subscribe(listener: StuckListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(write: StuckWrite, event: 'stuck' | 'cleared'): void {
    for (const listener of this.listeners) {
      try {
        listener(write, event);
      } catch {
        // A listener's failure (a closed socket) must not keep the registry from updating.
      }
    }
  }
}

/** The process's registry. */
export const stuckWrites = new StuckWrites();
