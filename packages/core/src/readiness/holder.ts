/**
 * How a device's holder is named, in one place: readiness reasons, plan refusals, the CLI and the
 * dashboard all say it the same way.
 */
import type { DeviceFacts, DeviceHolder } from '../inventory/schema';
import { clip, quote } from './bounded-text';

/**
 * `VM "web-1" (pid 4242, "qemu-system-x86")`, `process pid 7, "fio"`, or `an unknown process`.
 * Names come from a process's command line: quoted as JSON so no byte of theirs reads as ours.
 */
export function describeHolder(holder: DeviceHolder | null): string {
  if (holder === null) return 'an unknown process';
  const who = `pid ${holder.pid}, ${JSON.stringify(quote(holder.command))}`;
  return clip(
    holder.vm === null ? `process ${who}` : `VM ${JSON.stringify(quote(holder.vm))} (${who})`,
  );
}

/** The held devices among `devices`, in their order. */
export function heldDevices(devices: readonly DeviceFacts[]): DeviceFacts[] {
  return devices.filter((d) => d.inUse);
}

/** `0000:01:00.0 is in use by VM "web-1" (pid 4242, "qemu-system-x86")`, for each held device. */
export function describeHeld(devices: readonly DeviceFacts[]): string {
  return devices.map((d) => `${d.address} is in use by ${describeHolder(d.holder)}`).join('; ');
}

export const IN_USE_REMEDY =
  'Shut the VM down or detach the device from it first: a device a VM holds is never unbound (on a real kernel the unbind blocks until the VM lets go, or pulls the device out of the running guest).';
