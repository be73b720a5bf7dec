/**
 * What to call a device type. Names come from the agent's pci.ids; a host without that file
 * reports none, and then the class name ("Ethernet controller") says more than "unknown".
 */
export function deviceTypeName(t: {
  vendorName: string | null;
  deviceName: string | null;
  className?: string | null;
}): string {
  const name = [t.vendorName, t.deviceName].filter((x) => x !== null && x !== '').join(' ');
  if (name !== '') return name;
  return t.className ?? 'Unknown device';
}
