import { readModulesAlias } from '@vfio-fleet/testdata';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AliasIndex, linearMatch } from '../src/kmod/alias-index';
import { type AliasEntry, parseModulesAlias } from '../src/kmod/modules-alias';
import { DEFAULT_FILL, modaliasFor, readSnapshotModaliases } from './alias-fixtures';

// The largest real file, and the one with real variant-driver (vfio_pci:) aliases.
const LABELS = ['7.2.13+deb14-amd64', '6.12.117+deb12-amd64+vfio-variants'] as const;

const hex = (width: number) =>
  fc
    .integer({ min: 0, max: 16 ** width - 1 })
    .map((n) => n.toString(16).toUpperCase().padStart(width, '0'));

const fillArb = fc.record({
  vendor: hex(8),
  device: hex(8),
  subvendor: hex(8),
  subdevice: hex(8),
  baseclass: hex(2),
  subclass: hex(2),
  interface: hex(2),
});

/** Characters a mutation may bring in: hex both cases, markers, wildcards, separators, junk. */
const mutationChar = fc.constantFrom(
  ...'0123456789ABCDEFabcdefvdsi:_*?[]\\!^-. \tpcPCIxyz/é'.split(''),
);

type Mutation =
  | { kind: 'substitute' | 'insert'; at: number; ch: string }
  | { kind: 'delete' | 'truncate' | 'lowercase'; at: number };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constantFrom('substitute' as const, 'insert' as const),
    at: fc.nat(),
    ch: mutationChar,
  }),
  fc.record({
    kind: fc.constantFrom('delete' as const, 'truncate' as const, 'lowercase' as const),
    at: fc.nat(),
  }),
);

function mutate(key: string, mutations: readonly Mutation[]): string {
  let out = key;
  for (const m of mutations) {
    const at = out.length === 0 ? 0 : m.at % (out.length + 1);
    switch (m.kind) {
      case 'substitute':
        out = out.slice(0, at) + m.ch + out.slice(at + 1);
        break;
      case 'insert':
        out = out.slice(0, at) + m.ch + out.slice(at);
        break;
      case 'delete':
        out = out.slice(0, at) + out.slice(at + 1);
        break;
      case 'truncate':
        out = out.slice(0, at);
        break;
      case 'lowercase':
        out = out.slice(0, at) + out.slice(at).toLowerCase();
        break;
    }
  }
  return out;
}

describe.each(LABELS)('AliasIndex over the real %s', (label) => {
  const { entries } = parseModulesAlias(readModulesAlias(label));
  const index = AliasIndex.build(entries);
  const realKeys = [
    ...entries.flatMap((e) => {
      const key = modaliasFor(e.pattern);
      return key === null ? [] : [key];
    }),
    ...readSnapshotModaliases(),
  ];

  const expectSameAsLinear = (key: string) => {
    expect(index.match(key)).toEqual(linearMatch(entries, key));
    expect(index.match(`vfio_${key}`)).toEqual(linearMatch(entries, `vfio_${key}`));
  };

  it('indexes every entry', () => {
    expect(index.size).toBe(entries.length);
    expect(realKeys.length).toBeGreaterThan(6000);
  });

  it('finds, for every pci alias, a device it describes, exactly as linearMatch does', () => {
    // Every 7th key against the linear scan (the full set would take seconds of brute force);
    // every key for "its own alias is among the matches".
    realKeys.forEach((key, i) => {
      if (i % 7 === 0) expectSameAsLinear(key);
    });
    for (const entry of entries) {
      const key = modaliasFor(entry.pattern);
      if (key === null || entry.bus !== 'pci') continue;
      expect(index.match(key)).toContain(entry);
    }
  });

  it('agrees with linearMatch on random real-shaped modaliases', () => {
    fc.assert(
      fc.property(fc.constantFrom(...entries), fillArb, (entry, fill) => {
        const key = modaliasFor(entry.pattern, fill);
        if (key !== null) expectSameAsLinear(key);
      }),
      { numRuns: 400 },
    );
  });

  it('agrees with linearMatch on mutated modaliases (substitutions, insertions, deletions, case, truncation)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...realKeys),
        fc.array(mutationArb, { minLength: 1, maxLength: 4 }),
        (key, mutations) => expectSameAsLinear(mutate(key, mutations)),
      ),
      { numRuns: 600 },
    );
  });

  it('agrees with linearMatch on strings that are no modalias at all', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 60 }),
          fc.constantFrom('', 'pci:', 'vfio_', 'vfio_pci:', 'pci:v', 'usb:v1D6Bp0002', 'pci:*'),
          fc.string({ maxLength: 30 }).map((s) => `pci:v${s}`),
        ),
        (key) => expectSameAsLinear(key),
      ),
      { numRuns: 400 },
    );
  });

  it('does not scan every alias for a lookup', () => {
    let most = 0;
    let total = 0;
    let lookups = 0;
    for (const key of realKeys) {
      for (const k of [key, `vfio_${key}`]) {
        const candidates = index.candidatesFor(k);
        most = Math.max(most, candidates.length);
        total += candidates.length;
        lookups++;
        // match() is the candidates filtered by fnmatch, so it is a subset of them.
        for (const found of index.match(k)) expect(candidates).toContain(found);
      }
    }
    // Measured: at most 58 candidates (iwlwifi's 8086:08B1, one alias per subsystem device) and
    // about 4 on average, against ~9,600 entries that linearMatch runs fnmatch on.
    expect(most).toBeLessThan(100);
    expect(total / lookups).toBeLessThan(10);
  });
});

describe('AliasIndex on patterns of any shape', () => {
  const entry = (pattern: string, line: number): AliasEntry => ({
    pattern,
    module: `m${line}`,
    line,
    bus: pattern.startsWith('vfio_') ? 'vfio_pci' : 'pci',
  });

  it('handles hand-written irregular patterns exactly', () => {
    const entries = [
      'pci:v00008086d000010D3sv*sd*bc*sc*i*',
      'pci:v00008086d0000????sv*sd*bc*sc*i*', // `?` instead of digits
      'pci:v0000808[0-9]d*sv*sd*bc*sc*i*', // bracket
      'pci:v*d*sv*sd*bc02sc00i00', // no trailing star
      'pci:v*', // prefix only
      '*', // matches everything
      'pci:v00008086d000010d3sv*sd*bc*sc*i*', // lowercase digits: never matches a real key
      'pci:\\v00008086*', // escaped literal
      'vfio_pci:v*d*sv*sd*bc*sc*i*',
      'pci:v00008086d000010D3sv*sd*bc*sc*i**',
    ].map((p, i) => entry(p, i + 1));
    const index = AliasIndex.build(entries);
    const keys = [
      'pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00',
      'pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00extra',
      'pci:v00008081d00000001sv00008086sd0000A01Fbc03sc00i00',
      'vfio_pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00',
      'pci:v00008086d000010d3sv00008086sd0000a01fbc02sc00i00',
      '',
      'pci:v',
    ];
    for (const key of keys) expect(index.match(key)).toEqual(linearMatch(entries, key));
    expect(
      index.match('pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00').map((e) => e.line),
    ).toEqual([1, 2, 3, 4, 5, 6, 8, 10]);
  });

  it('agrees with linearMatch for random patterns derived from real ones and random keys', () => {
    const { entries: real } = parseModulesAlias(readModulesAlias(LABELS[1]));
    const patterns = real.map((e) => e.pattern);
    const patternArb = fc
      .tuple(fc.constantFrom(...patterns), fc.array(mutationArb, { maxLength: 3 }))
      .map(([p, m]) => mutate(p, m));
    fc.assert(
      fc.property(
        fc.array(patternArb, { minLength: 1, maxLength: 25 }),
        fc.constantFrom(...patterns),
        fillArb,
        fc.array(mutationArb, { maxLength: 2 }),
        (entryPatterns, keyPattern, fill, keyMutations) => {
          const entries = entryPatterns.map((p, i) => entry(p, i + 1));
          const index = AliasIndex.build(entries);
          const base = modaliasFor(keyPattern, fill) ?? modaliasFor('pci:v*d*sv*sd*bc*sc*i*', fill);
          const key = mutate(base ?? '', keyMutations);
          for (const k of [key, `vfio_${key}`]) {
            expect(index.match(k)).toEqual(linearMatch(entries, k));
          }
        },
      ),
      { numRuns: 1500 },
    );
  });

  it('matches canonical patterns field by field exactly as fnmatch does, on both buses', () => {
    // match() takes a canonical pattern whose literal fields equal the key's as a match without
    // running fnmatch; every field here is `*`, the key's own digits, or other digits.
    const FIELDS = ['v', 'd', 'sv', 'sd', 'bc', 'sc', 'i'] as const;
    const choiceArb = fc.array(fc.constantFrom('star', 'own', 'other'), {
      minLength: 7,
      maxLength: 7,
    });
    fc.assert(
      fc.property(
        fillArb,
        fillArb,
        fc.array(fc.tuple(choiceArb, fc.boolean(), fc.boolean()), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
        (own, other, shapes, vfioKey) => {
          const digits = (fill: typeof own) => [
            fill.vendor,
            fill.device,
            fill.subvendor,
            fill.subdevice,
            fill.baseclass,
            fill.subclass,
            fill.interface,
          ];
          const mine = digits(own);
          const theirs = digits(other);
          const patterns = shapes.map(([choices, vfioBus, trailingStar]) => {
            const body = FIELDS.map((marker, f) => {
              const choice = choices[f];
              return marker + (choice === 'star' ? '*' : choice === 'own' ? mine[f] : theirs[f]);
            }).join('');
            return `${vfioBus ? 'vfio_' : ''}pci:${body}${trailingStar ? '*' : ''}`;
          });
          const entries = patterns.map((p, i) => entry(p, i + 1));
          const key = `${vfioKey ? 'vfio_' : ''}pci:${FIELDS.map((m, f) => m + mine[f]).join('')}`;
          expect(AliasIndex.build(entries).match(key)).toEqual(linearMatch(entries, key));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('keeps file order when several buckets contribute', () => {
    const entries = [
      'pci:v*d*sv*sd*bc*sc*i*',
      'pci:v00001AF4d*sv*sd*bc*sc*i*',
      'pci:v*d*sv*sd*bc02sc*i*',
      'pci:v00001AF4d00001041sv*sd*bc*sc*i*',
      'pci:v00001AF4d0000104?sv*sd*bc*sc*i*',
    ].map((p, i) => entry(p, i + 1));
    const index = AliasIndex.build(entries);
    const key = modaliasFor('pci:v00001AF4d00001041sv*sd*bc*sc*i*', DEFAULT_FILL) ?? '';
    expect(index.match(key).map((e) => e.line)).toEqual([1, 2, 3, 4, 5]);
  });
});
