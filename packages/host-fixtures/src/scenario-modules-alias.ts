/**
 * Small modules.alias files for the scenarios, made of REAL lines copied verbatim (zcat | grep)
 * from /work/shared/testdata/modules-alias/6.12.117+deb12-amd64+vfio-variants.alias.gz: Debian
 * bookworm's 6.12.117+deb12-amd64 tree plus the in-tree vfio-pci variant drivers built against it.
 * Each scenario gets the `pci:` aliases that match its devices, the generic
 * `vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci` line and the mlx5_vfio_pci line, in the file's own order
 * (line order breaks ties between equally specific aliases, so it must be kept).
 */
import type { ScenarioName } from './scenarios';

/** The first line depmod writes. */
const HEADER = '# Aliases extracted from modules themselves.';

/** Keyed by the real file's line number, which also gives the order to write them in. */
const REAL_LINES = new Map<number, string>([
  [3048, 'alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau'],
  [3078, 'alias pci:v00001A03d00002000sv*sd*bc03sc*i* ast'],
  [5573, 'alias pci:v*d*sv*sd*bc01sc08i02* nvme'],
  [6280, 'alias pci:v000014E4d0000165Fsv*sd*bc*sc*i* tg3'],
  [7139, 'alias pci:v00008086d00001521sv*sd*bc*sc*i* igb'],
  [7184, 'alias pci:v00008086d00001563sv*sd*bc*sc*i* ixgbe'],
  [7251, 'alias pci:v00008086d00001572sv*sd*bc*sc*i* i40e'],
  [7397, 'alias pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_core'],
  [7398, 'alias pci:v000015B3d0000101Dsv*sd*bc*sc*i* mlx5_core'],
  [21823, 'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci'],
  [25904, 'alias pci:v000010DEd*sv*sd*bc04sc03i00* snd_hda_intel'],
  [27469, 'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci'],
]);

const SELECTION: Record<ScenarioName, number[]> = {
  'dual-gpu': [3048, 3078, 5573, 7251, 21823, 25904, 27469],
  'mlx5-vf': [5573, 6280, 7397, 7398, 21823, 27469],
  'critical-nvme-nic': [3048, 5573, 7184, 21823, 27469],
  'iommu-off': [3048, 3078, 5573, 7139, 21823, 25904, 27469],
  'vfio-bound': [3048, 3078, 5573, 7251, 21823, 25904, 27469],
  'vm-running': [3048, 3078, 5573, 7251, 21823, 25904, 27469],
};

/**
 * The proprietary nvidia module's aliases, as depmod writes them for a DKMS build under
 * updates/dkms (after the tree's own modules): its nv_pci_table matches NVIDIA display controllers
 * by exact class (VGA 0x030000, 3D 0x030200) and one multimedia device (0x0e00), so
 * file2alias pins the subclass and prog-if. Without them the nvidia driver of these scenarios had
 * an empty id table: a restore's drivers_probe could never bind it again.
 */
export const NVIDIA_DKMS_LINES = [
  'alias pci:v000010DEd*sv*sd*bc03sc00i00* nvidia',
  'alias pci:v000010DEd*sv*sd*bc03sc02i00* nvidia',
  'alias pci:v000010DEd00000E00sv*sd*bc04sc80i00* nvidia',
];

function aliasFile(lineNumbers: readonly number[], dkms: readonly string[] = []): string {
  const lines = [...lineNumbers].sort((a, b) => a - b).map((n) => REAL_LINES.get(n) ?? '');
  return `${[HEADER, ...lines.filter((line) => line !== ''), ...dkms].join('\n')}\n`;
}

export const SCENARIO_MODULES_ALIAS: Record<ScenarioName, string> = {
  'dual-gpu': aliasFile(SELECTION['dual-gpu'], NVIDIA_DKMS_LINES),
  'mlx5-vf': aliasFile(SELECTION['mlx5-vf']),
  'critical-nvme-nic': aliasFile(SELECTION['critical-nvme-nic'], NVIDIA_DKMS_LINES),
  'iommu-off': aliasFile(SELECTION['iommu-off'], NVIDIA_DKMS_LINES),
  'vfio-bound': aliasFile(SELECTION['vfio-bound']),
  'vm-running': aliasFile(SELECTION['vm-running']),
};
