/**
 * The pci.ids database, for human names. Optional: without it every device is still named by its
 * class from core's built-in table, and the snapshot says why names are missing.
 */
import { readFile } from 'node:fs/promises';
import { PciIdsDatabase, type Problem } from '@vfio-fleet/core';
import { AgentError } from '../errors';
import type { HostFs } from '../host-fs';

/** Where distributions install it (Debian's pci.ids, Fedora's hwdata, older layouts). */
export const PCI_IDS_CANDIDATES = [
  '/usr/share/misc/pci.ids',
  '/usr/share/hwdata/pci.ids',
  '/usr/share/pci.ids',
] as const;

export interface PciIdsFacts {
  path: string | null;
  db: PciIdsDatabase | null;
  problems: Problem[];
}

/**
 * `explicitPath` is a file on the machine running the agent (`--pci-ids`), read as given: the
 * operator asked for it, so it being unreadable is an error, not a state.
 */
export async function readPciIds(fs: HostFs, explicitPath: string | null): Promise<PciIdsFacts> {
  if (explicitPath !== null) {
    const text = await readFile(explicitPath, 'utf8').catch((error: unknown) => {
      const reason = error instanceof Error ? error.message : String(error);
      throw new AgentError('file-unreadable', `cannot read pci.ids ${explicitPath}: ${reason}`, {
        cause: error,
      });
    });
    return { path: explicitPath, db: PciIdsDatabase.parse(text), problems: [] };
  }
  for (const candidate of PCI_IDS_CANDIDATES) {
    const text = await fs.readText(candidate);
    if (text !== null) return { path: candidate, db: PciIdsDatabase.parse(text), problems: [] };
  }
  return {
    path: null,
    db: null,
    problems: [
      {
        source: PCI_IDS_CANDIDATES.join(', '),
        message: 'pci.ids not found: install the pci.ids package or pass --pci-ids',
      },
    ],
  };
}
