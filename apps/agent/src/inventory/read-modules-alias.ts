/**
 * The running kernel's modules.alias, indexed for vfio driver selection. Without it (no
 * /lib/modules, as in many VMs and containers) selection falls back to vfio_pci, which is still
 * correct for every device without a variant driver, so its absence is a problem, not a failure.
 */
import { readFile } from 'node:fs/promises';
import { AliasIndex, type Problem, parseModulesAlias } from '@vfio-fleet/core';
import { AgentError } from '../errors';
import type { HostFs } from '../host-fs';

export interface ModulesAliasFacts {
  /** Path read (a host path under the root, or the file given explicitly); null when none. */
  path: string | null;
  index: AliasIndex | null;
  pciAliases: number;
  vfioAliases: number;
  malformedLines: number;
  problems: Problem[];
}

/** Where depmod puts the file; merged-/usr distributions (Debian sid) only have the second. */
export function modulesAliasCandidates(release: string): string[] {
  return [`/lib/modules/${release}/modules.alias`, `/usr/lib/modules/${release}/modules.alias`];
}

export async function readModulesAlias(
  fs: HostFs,
  release: string | null,
): Promise<ModulesAliasFacts> {
  if (release === null) {
    return empty({
      source: '/proc/sys/kernel/osrelease',
      message:
        'kernel release unknown, so modules.alias cannot be located: vfio driver selection falls back to vfio_pci',
    });
  }
  const candidates = modulesAliasCandidates(release);
  for (const candidate of candidates) {
    const text = await fs.readText(candidate);
    if (text !== null) return indexModulesAlias(text, candidate);
  }
  return empty({
    source: candidates[0] ?? '',
    message: `modules.alias not found at ${candidates.join(' or ')}: vfio driver selection falls back to vfio_pci`,
  });
}

/** A modules.alias given explicitly (`match --modules-alias FILE`): unreadable is the caller's mistake. */
export async function readModulesAliasFile(file: string): Promise<ModulesAliasFacts> {
  const text = await readFile(file, 'utf8').catch((error: unknown) => {
    throw new AgentError(
      'file-unreadable',
      `cannot read modules.alias ${file}: ${describe(error)}`,
      {
        cause: error,
      },
    );
  });
  return indexModulesAlias(text, file);
}

export function indexModulesAlias(text: string, path: string): ModulesAliasFacts {
  const parsed = parseModulesAlias(text);
  const problems: Problem[] = parsed.errors.slice(0, 5).map((error) => ({
    source: `${path}:${error.line}`,
    message: `skipped malformed modules.alias line: ${error.message}`,
  }));
  if (parsed.errors.length > 5) {
    problems.push({
      source: path,
      message: `${parsed.errors.length - 5} more malformed modules.alias lines skipped`,
    });
  }
  const vfioAliases = parsed.entries.filter((entry) => entry.bus === 'vfio_pci').length;
  return {
    path,
    index: AliasIndex.build(parsed.entries),
    pciAliases: parsed.entries.length - vfioAliases,
    vfioAliases,
    malformedLines: parsed.errors.length,
    problems,
  };
}

function empty(problem: Problem): ModulesAliasFacts {
  return {
    path: null,
    index: null,
    pciAliases: 0,
    vfioAliases: 0,
    malformedLines: 0,
    problems: [problem],
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
