/**
 * IOMMU groups, IOMMU units and interrupt remapping. Groups are what vfio needs: a kernel with the
 * IOMMU off (or a VM without a virtual IOMMU) has none, and no device can be passed through.
 */
import {
  comparePciAddresses,
  type IommuGroup,
  PCI_ADDRESS_PATTERN,
  type Problem,
} from '@vfio-fleet/core';
import type { HostFs } from '../host-fs';

export const IOMMU_GROUPS_DIR = '/sys/kernel/iommu_groups';

export interface IommuFacts {
  groups: IommuGroup[];
  units: string[];
  interruptRemapping: 'enabled' | 'disabled' | 'unknown';
  problems: Problem[];
}

export async function readIommu(fs: HostFs): Promise<IommuFacts> {
  const problems: Problem[] = [];
  const ids = (await fs.listDir(IOMMU_GROUPS_DIR))
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .sort((a, b) => a - b);
  const groups: IommuGroup[] = [];
  for (const id of ids) {
    const devices = (await fs.listDir(`${IOMMU_GROUPS_DIR}/${id}/devices`))
      .filter((name) => PCI_ADDRESS_PATTERN.test(name))
      .sort(comparePciAddresses);
    groups.push({ id, devices });
  }
  if (groups.length === 0) {
    problems.push({
      source: IOMMU_GROUPS_DIR,
      message: `no IOMMU groups: ${IOMMU_GROUPS_DIR} is empty (IOMMU off or absent; no device can use vfio)`,
    });
  }
  return {
    groups,
    units: await fs.listDir('/sys/class/iommu'),
    interruptRemapping: interruptRemapping(await fs.readText('/proc/interrupts')),
    problems,
  };
}

/** `IR-PCI-MSI`, `IR-IO-APIC`...: irq chips the kernel names `IR-` only when remapping is on. */
export function interruptRemapping(interrupts: string | null): IommuFacts['interruptRemapping'] {
  if (interrupts === null) return 'unknown';
  return /\bIR-/.test(interrupts) ? 'enabled' : 'disabled';
}
