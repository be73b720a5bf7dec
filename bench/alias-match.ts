// How fast a fleet's devices get their vfio driver: AliasIndex.match on the `vfio_` key (what
// selectVfioDriver does per device) against linearMatch, the fnmatch-every-alias baseline, on
// real Debian modules.alias files. Targets: >= 1,000,000 lookups/s and >= 20x the baseline.
import {
  type AliasEntry,
  AliasIndex,
  linearMatch,
  parseModulesAlias,
  selectVfioDriver,
} from '@vfio-fleet/core';
import { readModulesAlias, readTestdata } from '@vfio-fleet/testdata';
import {
  type BenchResult,
  type Comparison,
  compareInterleaved,
  rate,
  seededRandom,
  shuffle,
  type Target,
  target,
} from './lib/measure';

const LOOKUPS_PER_SECOND_TARGET = 1_000_000;
const RATIO_TARGET = 20;

/** The largest real file (most pci: aliases), and the one with real variant-driver aliases. */
const FILES = ['7.2.13+deb14-amd64', '6.12.117+deb12-amd64+vfio-variants'] as const;

const FIELD =
  /^pci:v([0-9A-F]{8})d([0-9A-F]{8})sv([0-9A-F]{8}|\*)sd([0-9A-F]{8}|\*)bc([0-9A-F]{2}|\*)sc([0-9A-F]{2}|\*)i([0-9A-F]{2}|\*)\*?$/;
/** Classes a wildcard class field is filled with: NIC, NVMe, GPU, USB, accelerator, bridge. */
const CLASSES = ['020000', '010802', '030000', '030200', '0C0330', '120000', '060400'];

const hex = (random: () => number, width: number): string =>
  Math.floor(random() * 16 ** width)
    .toString(16)
    .toUpperCase()
    .padStart(width, '0');

/**
 * A plausible fleet: one device per pci alias with a literal vendor and device (subsystem and
 * class filled in where the alias leaves them open), plus the real modaliases of the sysfs
 * snapshot, shuffled so that lookups do not walk the file in order.
 */
function buildFleet(entries: readonly AliasEntry[], snapshot: readonly string[]): string[] {
  const random = seededRandom(0x5eed);
  const fleet: string[] = [];
  for (const entry of entries) {
    const m = FIELD.exec(entry.pattern);
    if (m === null) continue;
    const [, vendor, device, sv, sd, bc, sc, i] = m;
    const cls = CLASSES[Math.floor(random() * CLASSES.length)] ?? '020000';
    const pick = (value: string | undefined, fallback: string) =>
      value === undefined || value === '*' ? fallback : value;
    fleet.push(
      `pci:v${vendor}d${device}sv${pick(sv, hex(random, 4).padStart(8, '0'))}` +
        `sd${pick(sd, hex(random, 4).padStart(8, '0'))}bc${pick(bc, cls.slice(0, 2))}` +
        `sc${pick(sc, cls.slice(2, 4))}i${pick(i, cls.slice(4, 6))}`,
    );
  }
  fleet.push(...snapshot);
  return shuffle(fleet, random);
}

interface FileResult {
  file: string;
  entries: number;
  fleet: number;
  comparison: Comparison;
  selectPerSecond: number;
  meanCandidates: number;
  verified: number;
}

function benchFile(label: string, snapshot: readonly string[], quick: boolean): FileResult {
  const { entries } = parseModulesAlias(readModulesAlias(label));
  const index = AliasIndex.build(entries);
  const fleet = buildFleet(entries, snapshot);
  const keys = fleet.map((m) => `vfio_${m}`);

  // A fast wrong answer is worthless: check the index against the baseline on a sample first.
  const verified = quick ? 300 : 1500;
  for (const key of keys.slice(0, verified)) {
    const a = index.match(key);
    const b = linearMatch(entries, key);
    if (a.length !== b.length || a.some((e, i) => e !== b[i])) {
      throw new Error(`index and linear scan disagree on ${key}`);
    }
  }

  let candidates = 0;
  for (const key of keys) candidates += index.candidatesFor(key).length;

  // Results feed a sink so the JIT cannot drop the work. The baseline walks the fleet from
  // where it stopped, since one pass over every key would take it seconds.
  let sink = 0;
  let cursor = 0;
  const baselineChunk = 64;
  const comparison = compareInterleaved({
    repetitions: quick ? 5 : 11,
    minMs: quick ? 120 : 300,
    ours: () => {
      for (const key of keys) sink += index.match(key).length;
      return keys.length;
    },
    baseline: () => {
      for (let n = 0; n < baselineChunk; n++) {
        const key = keys[cursor] ?? '';
        cursor = (cursor + 1) % keys.length;
        sink += linearMatch(entries, key).length;
      }
      return baselineChunk;
    },
  });
  // The whole selection (candidates, wildcard counts, explanation), for context, not a target.
  const selectPerSecond = rate(
    () => {
      for (const m of fleet) sink += selectVfioDriver(index, m).candidates.length;
      return fleet.length;
    },
    quick ? 120 : 300,
  );
  if (sink < 0) console.log(sink);

  return {
    file: label,
    entries: entries.length,
    fleet: fleet.length,
    comparison,
    selectPerSecond,
    meanCandidates: candidates / keys.length,
    verified,
  };
}

export async function benchAliasMatch(opts: { quick: boolean }): Promise<BenchResult> {
  const snapshot = readTestdata('sysfs', 'ghw-linux-amd64-accel-nvidia.modalias.tsv')
    .split('\n')
    .filter((line) => line.includes('\t'))
    .map((line) => line.slice(line.indexOf('\t') + 1).trim());

  const results = FILES.map((label) => benchFile(label, snapshot, opts.quick));
  const targets: Target[] = results.flatMap((r) => [
    target(
      `${r.file}: AliasIndex.match lookups/s`,
      Math.round(r.comparison.oursMedian),
      LOOKUPS_PER_SECOND_TARGET,
      'lookups/s',
    ),
    target(
      `${r.file}: speed-up over linearMatch`,
      Number(r.comparison.ratio.toFixed(1)),
      RATIO_TARGET,
      'x',
    ),
  ]);
  const metrics: Record<string, number | string> = {};
  for (const r of results) {
    metrics[`${r.file} index lookups/s (median)`] = Math.round(r.comparison.oursMedian);
    metrics[`${r.file} linear lookups/s (median)`] = Math.round(r.comparison.baselineMedian);
    metrics[`${r.file} ratio (median)`] = Number(r.comparison.ratio.toFixed(1));
    metrics[`${r.file} selectVfioDriver/s`] = Math.round(r.selectPerSecond);
    metrics[`${r.file} fnmatch calls per lookup (index vs linear)`] =
      `${r.meanCandidates.toFixed(2)} vs ${r.entries}`;
  }
  return {
    scenario: 'alias-match',
    description:
      'vfio driver lookup per device: AliasIndex.match(vfio_<modalias>) vs linearMatch over real modules.alias files, interleaved repetitions',
    quick: opts.quick,
    metrics,
    targets,
    pass: targets.every((t) => t.pass),
    details: {
      node: process.version,
      files: results.map((r) => ({
        file: r.file,
        entries: r.entries,
        fleetDevices: r.fleet,
        verifiedAgainstLinear: r.verified,
        oursLookupsPerSecond: r.comparison.ours.map(Math.round),
        baselineLookupsPerSecond: r.comparison.baseline.map(Math.round),
      })),
    },
  };
}
