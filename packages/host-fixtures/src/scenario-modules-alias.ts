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

function aliasFile(lineNumbers: readonly number[]): string {
  const lines = [...lineNumbers].sort((a, b) => a - b).map((n) => REAL_LINES.get(n) ?? '');
  return `${[HEADER, ...lines.filter((line) => line !== '')].join('\n')}\n`;
}

export const SCENARIO_MODULES_ALIAS: Record<ScenarioName, string> = {
  'dual-gpu': aliasFile(SELECTION['dual-gpu']),
  'mlx5-vf': aliasFile(SELECTION['mlx5-vf']),
  'critical-nvme-nic': aliasFile(SELECTION['critical-nvme-nic']),
  'iommu-off': aliasFile(SELECTION['iommu-off']),
  'vfio-bound': aliasFile(SELECTION['vfio-bound']),
  'vm-running': aliasFile(SELECTION['vm-running']),
};
