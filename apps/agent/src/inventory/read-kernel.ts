/**
 * Kernel-level facts: command line IOMMU flags, release, CPU vendor, loaded modules (and the PCI
 * driver name each registers, which vfio driver selection needs) and /dev/vfio.
 */
import { type CmdlineFlags, type CpuVendor, isVfioDriverName } from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';

export interface KernelFacts {
  release: string | null;
  cmdline: CmdlineFlags;
  /** Raw `key=value` pairs of the command line, for lookups such as `root=`. */
  cmdlineParams: ReadonlyMap<string, string>;
  cpuVendor: CpuVendor;
  virtualMachine: boolean;
  /** Every entry of /sys/module. */
  modules: string[];
  /** module → PCI driver name it registers (`vfio_pci` → `vfio-pci`). */
  loadedDrivers: ReadonlyMap<string, string>;
  vfioModules: string[];
  vfioDevNodes: string[];
}

export async function readKernel(fs: HostFs): Promise<KernelFacts> {
  const rawCmdline = ((await fs.readText('/proc/cmdline')) ?? '').trim();
  const params = parseCmdline(rawCmdline);
  const cpu = parseCpuinfo(await fs.readText('/proc/cpuinfo'));
  const modules = await fs.listDir('/sys/module');
  return {
    release: (await fs.readAttr('/proc/sys/kernel/osrelease')) || null,
    cmdline: cmdlineFlags(rawCmdline, params),
    cmdlineParams: new Map(params.map(([key, value]) => [key, value])),
    cpuVendor: cpu.vendor,
    virtualMachine: cpu.hypervisor,
    modules,
    loadedDrivers: await readLoadedDrivers(fs, modules),
    vfioModules: modules.filter((name) => name.startsWith('vfio') || isVfioDriverName(name)),
    vfioDevNodes: await fs.listDir('/dev/vfio'),
  };
}

/**
 * The PCI driver name each loaded module registers. Names differ from module names (`vfio_pci`
 * registers `vfio-pci`) and driver_override needs the driver name, so read it rather than guess.
 */
export async function readLoadedDrivers(
  fs: HostFs,
  modules?: readonly string[],
): Promise<Map<string, string>> {
  const drivers = new Map<string, string>();
  for (const module of modules ?? (await fs.listDir('/sys/module'))) {
    for (const entry of await fs.listDir(`/sys/module/${module}/drivers`)) {
      if (entry.startsWith('pci:')) {
        drivers.set(module, entry.slice('pci:'.length));
        break;
      }
    }
  }
  return drivers;
}

/**
 * `key=value` tokens of a kernel command line, in order. Everything after `--` belongs to init,
 * and double quotes may wrap values with spaces, as the kernel's own parser allows.
 */
export function parseCmdline(raw: string): Array<[string, string]> {
  const params: Array<[string, string]> = [];
  for (const token of raw.match(/(?:[^\s"]+|"[^"]*")+/g) ?? []) {
    if (token === '--') break;
    const unquoted = token.replaceAll('"', '');
    const eq = unquoted.indexOf('=');
    if (eq === -1) params.push([unquoted, '']);
    else params.push([unquoted.slice(0, eq), unquoted.slice(eq + 1)]);
  }
  return params;
}

function cmdlineFlags(raw: string, params: Array<[string, string]>): CmdlineFlags {
  // The kernel applies parameters in order, so for a repeated flag the last one wins.
  const last = (key: string): string | null => {
    let value: string | null = null;
    for (const [k, v] of params) if (k === key) value = v;
    return value;
  };
  const vfioPciIds = params
    .filter(([key]) => key === 'vfio-pci.ids' || key === 'vfio_pci.ids')
    .flatMap(([, value]) => value.split(','))
    .filter((id) => id !== '');
  return {
    intelIommu: last('intel_iommu'),
    amdIommu: last('amd_iommu'),
    iommu: last('iommu'),
    iommuPassthrough: last('iommu.passthrough'),
    pcieAcsOverride: last('pcie_acs_override'),
    vfioPciIds,
    raw,
  };
}

function parseCpuinfo(text: string | null): { vendor: CpuVendor; hypervisor: boolean } {
  if (text === null) return { vendor: 'unknown', hypervisor: false };
  const vendorId = /^vendor_id\s*:\s*(\S+)/m.exec(text)?.[1];
  let vendor: CpuVendor = 'unknown';
  if (vendorId === 'GenuineIntel') vendor = 'intel';
  else if (vendorId === 'AuthenticAMD') vendor = 'amd';
  else if (vendorId !== undefined) vendor = 'other';
  else if (/^CPU implementer\s*:/m.test(text)) vendor = 'arm';
  const hypervisor = /^flags\s*:.*\bhypervisor\b/m.test(text);
  return { vendor, hypervisor };
}
