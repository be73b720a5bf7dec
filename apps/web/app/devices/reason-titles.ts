/**
 * Short titles for core's readiness reason codes (packages/core/src/readiness/rules.ts). The codes
 * are stable; the full message and remedy come from the server. An unknown code (a newer core) is
 * shown as itself.
 */
const TITLES: Record<string, string> = {
  'iommu-off': 'IOMMU off',
  'no-iommu-group': 'No IOMMU group',
  'not-endpoint': 'PCI bridge (not an endpoint)',
  'host-critical': 'Host-critical device',
  'group-member-unreadable': 'Unreadable IOMMU group member',
  'group-not-viable': 'IOMMU group not viable',
  'no-interrupt-remapping': 'Interrupt remapping off',
  'acs-override': 'ACS override in use',
  'sriov-vfs-enabled': 'SR-IOV PF with VFs enabled',
  'no-reset-method': 'No reset method',
  'vfio-driver-ambiguous': 'Ambiguous vfio driver',
  'vfio-fallback': 'Generic vfio-pci fallback',
  'driver-override-foreign': 'Foreign driver_override',
  'group-shared': 'Shared IOMMU group',
};

export function reasonTitle(code: string): string {
  return TITLES[code] ?? code;
}
