import { MODULES_ALIAS_LABELS, readModulesAlias } from '@vfio-fleet/testdata';
import { describe, expect, it } from 'vitest';
import { vfioSelectionSchema } from '../src/inventory/schema';
import { AliasIndex, linearMatch } from '../src/kmod/alias-index';
import { type AliasEntry, parseModulesAlias } from '../src/kmod/modules-alias';
import {
  conventionalDriverName,
  countWildcards,
  isVfioDriverName,
  selectVfioDriver,
} from '../src/vfio/select-variant';
import { modaliasFor, readSnapshotModaliases } from './alias-fixtures';

const VARIANTS = '6.12.117+deb12-amd64+vfio-variants';

function loadIndex(label: string): { entries: AliasEntry[]; index: AliasIndex } {
  const { entries } = parseModulesAlias(readModulesAlias(label));
  return { entries, index: AliasIndex.build(entries) };
}

// A ConnectX-6 Dx VF as lspci shows it on a real host (subsystem 15b3:0083, Ethernet controller).
const MLX5_VF = 'pci:v000015B3d0000101Esv000015B3sd00000083bc02sc00i00';
// A Grace Hopper GH200 GPU (3D controller).
const GH200 = 'pci:v000010DEd00002342sv000010DEsd000016EBbc03sc02i00';
// The real virtio-net function of the ghw QEMU snapshot.
const VIRTIO_NET = 'pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00';
// An Intel X710 port: plenty of pci: aliases, no vfio variant driver.
const X710 = 'pci:v00008086d00001572sv00008086sd00000001bc02sc00i00';

describe('selectVfioDriver on the real +vfio-variants modules.alias', () => {
  const { entries, index } = loadIndex(VARIANTS);

  it('selects the variant driver of every vfio_pci alias for a device that alias describes', () => {
    const vfioEntries = entries.filter((e) => e.bus === 'vfio_pci');
    expect(vfioEntries).toHaveLength(12);
    for (const entry of vfioEntries) {
      const modalias = modaliasFor(entry.pattern);
      expect(modalias).not.toBeNull();
      const selection = selectVfioDriver(index, modalias ?? '');
      expect(selection.module).toBe(entry.module);
      expect(selection.source).toBe('alias');
      expect(selection.ambiguous).toBe(false);
    }
  });

  it('picks mlx5_vfio_pci for a ConnectX VF: 5 wildcards beat the generic alias with 7', () => {
    const selection = selectVfioDriver(index, MLX5_VF);
    expect(vfioSelectionSchema.parse(selection)).toEqual(selection);
    expect(selection).toMatchObject({
      module: 'mlx5_vfio_pci',
      driver: 'mlx5_vfio_pci',
      driverSource: 'convention',
      source: 'alias',
      ambiguous: false,
    });
    expect(selection.candidates.map((c) => [c.module, c.wildcards])).toEqual([
      ['vfio_pci', 7],
      ['mlx5_vfio_pci', 5],
    ]);
    const generic = selection.candidates[0];
    expect(generic?.pattern).toBe('vfio_pci:v*d*sv*sd*bc*sc*i*');
    expect(generic?.line).toBe(entries.find((e) => e.module === 'vfio_pci')?.line);
    expect(selection.explanation).toContain('mlx5_vfio_pci');
    expect(selection.explanation).toContain('fewest wildcards (5)');
  });

  it('picks nvgrace_gpu_vfio_pci for a GH200', () => {
    expect(selectVfioDriver(index, GH200).module).toBe('nvgrace_gpu_vfio_pci');
  });

  it('picks virtio_vfio_pci for the real virtio-net modalias of the sysfs snapshot', () => {
    const modaliases = readSnapshotModaliases();
    expect(modaliases).toContain(VIRTIO_NET);
    expect(selectVfioDriver(index, VIRTIO_NET).module).toBe('virtio_vfio_pci');
  });

  it('falls to the generic vfio_pci for a device no variant driver knows', () => {
    const selection = selectVfioDriver(index, X710);
    expect(selection).toMatchObject({
      module: 'vfio_pci',
      driver: 'vfio-pci',
      source: 'alias',
      ambiguous: false,
    });
    expect(selection.candidates).toHaveLength(1);
  });

  it('gives, for every modalias of the sysfs snapshot, what a linear scan gives', () => {
    for (const modalias of readSnapshotModaliases()) {
      const key = `vfio_${modalias}`;
      expect(index.match(key)).toEqual(linearMatch(entries, key));
      const linearWinner = linearMatch(entries, key)
        .filter((e) => e.bus === 'vfio_pci')
        .reduce<AliasEntry | null>(
          (best, e) =>
            best === null || countWildcards(e.pattern) < countWildcards(best.pattern) ? e : best,
          null,
        );
      expect(selectVfioDriver(index, modalias).module).toBe(linearWinner?.module);
    }
  });

  it('uses the driver name sysfs reports when the module is loaded', () => {
    const loaded = new Map([['mlx5_vfio_pci', 'mlx5_vfio_pci']]);
    const selection = selectVfioDriver(index, MLX5_VF, loaded);
    expect(selection.driverSource).toBe('sysfs');
    expect(selection.explanation).toContain('/sys/module/mlx5_vfio_pci/drivers');
    // Another module being loaded says nothing about this one.
    const other = selectVfioDriver(index, X710, loaded);
    expect(other).toMatchObject({ driver: 'vfio-pci', driverSource: 'convention' });
  });
});

describe('selectVfioDriver on stock Debian kernels', () => {
  it.each(MODULES_ALIAS_LABELS.filter((l) => l !== VARIANTS))(
    '%s has only the generic alias, so a ConnectX VF gets vfio_pci',
    (label) => {
      const { index } = loadIndex(label);
      const selection = selectVfioDriver(index, MLX5_VF);
      expect(selection).toMatchObject({
        module: 'vfio_pci',
        driver: 'vfio-pci',
        source: 'alias',
        ambiguous: false,
      });
      expect(selection.candidates).toEqual([
        expect.objectContaining({ pattern: 'vfio_pci:v*d*sv*sd*bc*sc*i*', wildcards: 7 }),
      ]);
      expect(vfioSelectionSchema.safeParse(selection).success).toBe(true);
    },
  );
});

describe('selectVfioDriver fallback and ties', () => {
  it('falls back to vfio_pci when no vfio_pci alias exists (kernels before 5.16)', () => {
    const { entries } = parseModulesAlias(readModulesAlias('6.1.0-56-amd64'));
    const pciOnly = AliasIndex.build(entries.filter((e) => e.bus === 'pci'));
    const selection = selectVfioDriver(pciOnly, MLX5_VF);
    expect(selection).toMatchObject({
      module: 'vfio_pci',
      driver: 'vfio-pci',
      driverSource: 'convention',
      source: 'fallback',
      ambiguous: false,
      candidates: [],
    });
    expect(selection.explanation).toContain('5.16');
    expect(vfioSelectionSchema.safeParse(selection).success).toBe(true);
  });

  it('falls back to vfio_pci when the host has no modules.alias', () => {
    const selection = selectVfioDriver(null, MLX5_VF, new Map([['vfio_pci', 'vfio-pci']]));
    expect(selection).toMatchObject({
      module: 'vfio_pci',
      driver: 'vfio-pci',
      driverSource: 'sysfs',
      source: 'fallback',
    });
    expect(selection.explanation).toContain('No modules.alias');
  });

  it('marks a tie as ambiguous and lets the first alias in file order win', () => {
    const { entries } = parseModulesAlias(
      [
        'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci',
        'alias vfio_pci:v000015B3d*sv*sd*bc02sc*i* early_vfio_pci',
        'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci',
        'alias vfio_pci:v*d0000101Esv*sd*bc*sc00i* late_vfio_pci',
      ].join('\n'),
    );
    const selection = selectVfioDriver(AliasIndex.build(entries), MLX5_VF);
    expect(selection.candidates.map((c) => [c.module, c.wildcards, c.line])).toEqual([
      ['vfio_pci', 7, 1],
      ['early_vfio_pci', 5, 2],
      ['mlx5_vfio_pci', 5, 3],
      ['late_vfio_pci', 5, 4],
    ]);
    expect(selection).toMatchObject({
      module: 'early_vfio_pci',
      driver: 'early_vfio_pci',
      ambiguous: true,
    });
    expect(selection.explanation).toContain('comes first in modules.alias');
  });
});

describe('vfio driver names', () => {
  it('knows vfio-pci registers a dashed driver name and variants use their module name', () => {
    expect(conventionalDriverName('vfio_pci')).toBe('vfio-pci');
    for (const module of [
      'mlx5_vfio_pci',
      'hisi_acc_vfio_pci',
      'pds_vfio_pci',
      'virtio_vfio_pci',
      'nvgrace_gpu_vfio_pci',
      'qat_vfio_pci',
      'xe_vfio_pci',
      'ism_vfio_pci',
    ]) {
      expect(conventionalDriverName(module)).toBe(module);
      expect(isVfioDriverName(module)).toBe(true);
    }
  });

  it('recognizes vfio driver names and nothing else', () => {
    expect(isVfioDriverName('vfio-pci')).toBe(true);
    expect(isVfioDriverName('foo-vfio-pci')).toBe(true);
    for (const name of ['vfio_pci', '_vfio_pci', 'mlx5_core', 'nvidia', 'vfio', 'pci-stub', '']) {
      expect(isVfioDriverName(name)).toBe(false);
    }
  });

  it('counts the wildcards that make a pattern less specific', () => {
    expect(countWildcards('vfio_pci:v*d*sv*sd*bc*sc*i*')).toBe(7);
    expect(countWildcards('vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*')).toBe(5);
    expect(countWildcards('pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00')).toBe(0);
    // An escaped star is a literal `*`, not a wildcard.
    expect(countWildcards('a\\*b*')).toBe(1);
  });
});
