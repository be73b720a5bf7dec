/**
 * Which vfio driver a PCI device should be bound to for passthrough, chosen the way libvirt does
 * it since Linux 5.16 introduced vfio variant drivers (mlx5_vfio_pci, nvgrace_gpu_vfio_pci...):
 * prefix the device's modalias with `vfio_`, collect every `vfio_pci:` alias in modules.alias that
 * matches it, and take the module whose pattern has the fewest `*` (the most specific one). The
 * generic `vfio_pci:v*d*sv*sd*bc*sc*i*` alias of vfio-pci itself always matches, so it wins only
 * when no variant driver claims the device.
 */
import type { VfioCandidate, VfioSelection } from '../inventory/schema';
import type { AliasIndex } from '../kmod/alias-index';

const GENERIC_MODULE = 'vfio_pci';
/** vfio-pci.ko registers its PCI driver with a dash; every variant driver uses its module name. */
const GENERIC_DRIVER = 'vfio-pci';

/**
 * Number of wildcard `*` in a modules.alias pattern: fewer means more specific.
 * A backslash-escaped `\*` is a literal star, so it is not counted. libvirt counts every `*`
 * character; the two agree on every real alias, because file2alias never escapes anything.
 */
export function countWildcards(pattern: string): number {
  let count = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern.charCodeAt(i);
    if (c === 0x5c /* \ */) i++;
    else if (c === 0x2a /* * */) count++;
  }
  return count;
}

/**
 * The PCI driver name a vfio module registers, for writing to driver_override when the module is
 * not loaded yet (so /sys/module/<module>/drivers cannot be read). vfio_pci registers `vfio-pci`;
 * the variant drivers in the kernel (mlx5_vfio_pci, hisi_acc_vfio_pci, pds_vfio_pci,
 * virtio_vfio_pci, nvgrace_gpu_vfio_pci, qat_vfio_pci, xe_vfio_pci, ism_vfio_pci) all declare
 * `.name = KBUILD_MODNAME` in their struct pci_driver, i.e. exactly the module name.
 */
export function conventionalDriverName(module: string): string {
  return module === GENERIC_MODULE ? GENERIC_DRIVER : module;
}

/**
 * True for a PCI driver name that belongs to vfio: `vfio-pci` or a variant driver, whose names
 * end in `_vfio_pci` (or `-vfio-pci`, for an out-of-tree driver that copies vfio-pci's dashed
 * style). `vfio_pci` on its own is a module name, never a PCI driver name, and is not accepted.
 */
export function isVfioDriverName(name: string): boolean {
  if (name === GENERIC_DRIVER) return true;
  for (const suffix of ['_vfio_pci', '-vfio-pci']) {
    if (name.length > suffix.length && name.endsWith(suffix)) return true;
  }
  return false;
}

function describe(candidate: VfioCandidate): string {
  return `${candidate.module} (${candidate.pattern}, ${candidate.wildcards} wildcard${candidate.wildcards === 1 ? '' : 's'}, line ${candidate.line})`;
}

function driverSentence(
  module: string,
  driver: string,
  source: VfioSelection['driverSource'],
): string {
  return source === 'sysfs'
    ? `Its PCI driver is ${driver}, as /sys/module/${module}/drivers shows.`
    : `Its PCI driver will be ${driver} (${module} is not loaded, so the kernel's naming convention is assumed).`;
}

/**
 * Chooses the vfio module and PCI driver for the device with this modalias.
 * `index` is built from the host's modules.alias (null when the host has none); `loadedDrivers`
 * maps a loaded module to the PCI driver name read from `/sys/module/<module>/drivers/pci:<name>`.
 */
export function selectVfioDriver(
  index: AliasIndex | null,
  modalias: string,
  loadedDrivers?: ReadonlyMap<string, string>,
): VfioSelection {
  const driverFor = (module: string): Pick<VfioSelection, 'driver' | 'driverSource'> => {
    const loaded = loadedDrivers?.get(module);
    return loaded === undefined
      ? { driver: conventionalDriverName(module), driverSource: 'convention' }
      : { driver: loaded, driverSource: 'sysfs' };
  };

  const key = `vfio_${modalias}`;
  const candidates: VfioCandidate[] =
    index === null
      ? []
      : index
          .match(key)
          .filter((entry) => entry.bus === 'vfio_pci')
          .map((entry) => ({
            pattern: entry.pattern,
            module: entry.module,
            wildcards: countWildcards(entry.pattern),
            line: entry.line,
          }));

  const [first] = candidates;
  if (first === undefined) {
    const { driver, driverSource } = driverFor(GENERIC_MODULE);
    const why =
      index === null
        ? 'No modules.alias was found on this host, so no vfio variant driver can be looked up'
        : `No vfio_pci alias in modules.alias matches ${key} (kernels before 5.16 have none)`;
    return {
      module: GENERIC_MODULE,
      driver,
      driverSource,
      source: 'fallback',
      ambiguous: false,
      candidates,
      explanation: `${why}; the generic ${GENERIC_MODULE} driver is used. ${driverSentence(GENERIC_MODULE, driver, driverSource)}`,
    };
  }

  // Candidates are in file order, so keeping the first of the fewest wildcards breaks ties by it.
  let winner = first;
  for (const candidate of candidates) {
    if (candidate.wildcards < winner.wildcards) winner = candidate;
  }
  const tied = candidates.filter((c) => c.wildcards === winner.wildcards);
  const ambiguous = tied.length > 1;
  const { driver, driverSource } = driverFor(winner.module);

  let why: string;
  if (candidates.length === 1) {
    why = `The only vfio_pci alias matching this device is ${describe(winner)}, so ${winner.module} is used.`;
  } else {
    const list = candidates.map(describe).join('; ');
    why = ambiguous
      ? `${candidates.length} vfio_pci aliases match this device: ${list}. ${tied.map((c) => c.module).join(', ')} tie with ${winner.wildcards} wildcards; ${winner.module} wins because it comes first in modules.alias.`
      : `${candidates.length} vfio_pci aliases match this device: ${list}. ${winner.module} wins with the fewest wildcards (${winner.wildcards}).`;
  }
  return {
    module: winner.module,
    driver,
    driverSource,
    source: 'alias',
    ambiguous,
    candidates,
    explanation: `${why} ${driverSentence(winner.module, driver, driverSource)}`,
  };
}
