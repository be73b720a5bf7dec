/** PCI routing ids: where SR-IOV puts VF n (the PF's id + offset + n * stride). */

/** PCI routing id (bus << 8 | device << 3 | function) of a canonical address. */
export function routingId(address: string): number {
  const [, bus = '0', slot = '0.0'] = address.split(':');
  const [device = '0', fn = '0'] = slot.split('.');
  return (Number.parseInt(bus, 16) << 8) | (Number.parseInt(device, 16) << 3) | Number(fn);
}

/** The canonical address of a routing id in `domain`. */
export function addressOfRoutingId(domain: string, rid: number): string {
  const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
  return `${domain}:${hex(rid >> 8, 2)}:${hex((rid >> 3) & 0x1f, 2)}.${rid & 7}`;
}
