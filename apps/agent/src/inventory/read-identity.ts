/** Who the host is: its name and machine id, so a fleet server can tell hosts apart. */
import type { HostFs } from '../host-fs';

export interface HostIdentity {
  hostname: string;
  machineId: string | null;
}

export async function readIdentity(fs: HostFs): Promise<HostIdentity> {
  const hostname =
    (await fs.readAttr('/etc/hostname')) || (await fs.readAttr('/proc/sys/kernel/hostname'));
  return {
    hostname: hostname || 'unknown',
    machineId: (await fs.readAttr('/etc/machine-id')) || null,
  };
}
