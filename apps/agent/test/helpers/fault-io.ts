// The rollback property's KernelIo: one fault armed on the kernel model at a chosen call.
import { readlink } from 'node:fs/promises';
import path from 'node:path';
import type { KernelErrno, KernelIo } from '@vfio-fleet/core';
import type { KernelModel } from '@vfio-fleet/host-fixtures';
import type { HolderAppears } from './holder-fault';

export type Injection =
  | { kind: 'write-fails'; errno: KernelErrno }
  | { kind: 'bind-refuses'; driver: string }
  | { kind: 'probe-hangs' }
  | { kind: 'modprobe-fails' }
  /** A VM opens a device of the plan right before the call (helpers/holder-fault). */
  | { kind: 'holder-appears' };

/**
 * The executor's KernelIo: arms one fault on the model right before the `at`-th kernel call, and
 * records every unbind through a device's `driver` link made while that device was still on the
 * driver it had at the start (the rollback unbinding a device that never left).
 */
export class FaultIo implements KernelIo {
  private calls = 0;
  readonly needlessUnbinds: string[] = [];
  constructor(
    private readonly model: KernelModel,
    private readonly root: string,
    private readonly initial: ReadonlyMap<string, string | null>,
    private readonly at: number,
    private readonly injection: Injection,
    private readonly holder: HolderAppears | null,
  ) {}

  async write(p: string, value: string): Promise<void> {
    const unbindThrough = /^\/sys\/bus\/pci\/devices\/([^/]+)\/driver\/unbind$/.exec(p)?.[1];
    if (unbindThrough !== undefined) {
      const now = await driverOf(this.root, unbindThrough);
      if (now !== null && now === this.initial.get(unbindThrough)) {
        this.needlessUnbinds.push(`${unbindThrough} on ${now}`);
      }
    }
    if (this.calls++ === this.at) {
      switch (this.injection.kind) {
        case 'holder-appears':
          await this.holder?.appear(p, value);
          break;
        case 'write-fails':
          this.model.addFault({
            kind: 'write-fails',
            path: p,
            errno: this.injection.errno,
            times: 1,
          });
          break;
        case 'bind-refuses':
          this.model.addFault({ kind: 'bind-refuses', driver: this.injection.driver });
          break;
        case 'probe-hangs':
          this.model.addFault({ kind: 'probe-hangs', address: value });
          break;
        case 'modprobe-fails':
          break;
      }
    }
    await this.holder?.beforeWrite(p, value);
    return this.model.write(p, value);
  }

  async modprobe(module: string): Promise<void> {
    if (this.calls++ === this.at) {
      if (this.injection.kind === 'modprobe-fails') {
        this.model.addFault({ kind: 'modprobe-fails', module });
      } else if (this.injection.kind === 'holder-appears') {
        await this.holder?.appear(`modprobe ${module}`, '');
      }
    }
    return this.model.modprobe(module);
  }
}

export async function driverOf(root: string, address: string): Promise<string | null> {
  try {
    return path.basename(await readlink(path.join(root, 'sys/bus/pci/devices', address, 'driver')));
  } catch {
    return null;
  }
}
