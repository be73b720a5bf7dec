/**
 * Who holds an in-use device, as the agent read it from /proc on its host. Every part comes from a
 * process's command line there, so it is shown as text (React escapes it), never as markup.
 */
import type { DeviceHolder } from '@vfio-fleet/core';

/** One line: `VM web-1 · pid 4242 · qemu-system-x86_64`, or a process without a VM name. */
export function HolderText({ holder }: { holder: DeviceHolder | null }) {
  if (holder === null) {
    return <span className="muted">an unknown process (a device fd /proc does not name)</span>;
  }
  return (
    <span>
      {holder.vm === null ? (
        'a process'
      ) : (
        <>
          VM <strong>{holder.vm}</strong>
        </>
      )}{' '}
      · pid <span className="mono">{holder.pid}</span> ·{' '}
      <span className="mono">{holder.command}</span>
    </span>
  );
}

/** Why a group offers no restore or rebind while a device of it is held. */
export function heldGroupMessage(
  held: readonly { address: string; holder: DeviceHolder | null }[],
): string {
  const who = held.map((d) =>
    d.holder === null
      ? `${d.address} by an unknown process`
      : d.holder.vm === null
        ? `${d.address} by pid ${d.holder.pid} (${d.holder.command})`
        : `${d.address} by VM ${d.holder.vm}`,
  );
  return `In use: ${who.join(', ')}. No restore or rebind while a VM holds a device of this group; shut the VM down or detach the device first.`;
}
