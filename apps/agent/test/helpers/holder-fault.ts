// The fault "a VM opens a device mid-job" for the rollback property: at a chosen kernel call, a
// holder takes the first device of the plan that a user could open then (on a vfio driver, its
// group viable), as QEMU starting between two of the job's writes would.
import { readlink } from 'node:fs/promises';
import path from 'node:path';
import type { KernelModel } from '@vfio-fleet/host-fixtures';

const VM = { pid: 7777, comm: 'qemu-system-x86', cmdline: ['qemu-system-x86_64', '-name', 'vm9'] };

/** The device an unbind or remove write takes from its driver; null for any other write. */
export function unbindTarget(p: string, value: string): string | null {
  const through = /^\/sys\/bus\/pci\/devices\/([^/]+)\/(?:driver\/unbind|remove)$/.exec(p)?.[1];
  if (through !== undefined) return through;
  return /^\/sys\/bus\/pci\/drivers\/[^/]+\/unbind$/.test(p) ? value.trim() : null;
}

export class HolderAppears {
  /** The device taken; null until then, or when none could be opened at that call. */
  held: string | null = null;
  /** Unbind or remove writes sent for the held device while it was held. */
  readonly heldUnbinds: string[] = [];
  private release: (() => Promise<void>) | null = null;

  constructor(
    private readonly model: KernelModel,
    private readonly root: string,
    private readonly devices: readonly string[],
  ) {}

  /** The VM starts: just before the call writing `value` to `p` (the one it cannot race). */
  async appear(p: string, value: string): Promise<void> {
    const unbinding = unbindTarget(p, value);
    for (const address of this.devices) {
      if (address === unbinding) continue;
      const dir = path.join(this.root, 'sys/bus/pci/devices', address);
      const driver = await readlink(path.join(dir, 'driver')).catch(() => null);
      const group = await readlink(path.join(dir, 'iommu_group')).catch(() => null);
      if (driver === null || group === null || !path.basename(driver).startsWith('vfio')) continue;
      if (!(await this.model.groupViable(Number(path.basename(group))))) continue;
      this.release = await this.model.holdDevice(address, VM);
      this.held = address;
      return;
    }
  }

  /**
   * Before any write: an unbind of the held device is recorded, and the VM let go first, so a
   * test that fails says so instead of blocking on the model's wait for the holder.
   */
  async beforeWrite(p: string, value: string): Promise<void> {
    if (this.held === null || this.release === null) return;
    if (unbindTarget(p, value) !== this.held) return;
    this.heldUnbinds.push(`${p} ${value}`);
    await this.letGo();
  }

  async letGo(): Promise<void> {
    const release = this.release;
    this.release = null;
    if (release !== null) await release();
  }
}
