import { MODULES_ALIAS_LABELS, readModulesAlias, readTestdata } from '@vfio-fleet/testdata';
import { describe, expect, it } from 'vitest';
import { parseModulesAlias } from '../src/kmod/modules-alias';

/** What `zcat FILE | grep -c '^PREFIX'` says, computed with plain string operations. */
function countLinesStartingWith(text: string, prefix: string): number {
  return text.split('\n').filter((line) => line.startsWith(prefix)).length;
}

describe('parseModulesAlias on the real files', () => {
  describe.each(MODULES_ALIAS_LABELS)('%s', (label) => {
    const text = readModulesAlias(label);
    const parsed = parseModulesAlias(text);
    const lines = text.split('\n');
    if (lines.at(-1) === '') lines.pop();

    it('keeps exactly the lines grep counts as pci: and vfio_pci: aliases', () => {
      const pci = parsed.entries.filter((e) => e.bus === 'pci');
      const vfio = parsed.entries.filter((e) => e.bus === 'vfio_pci');
      expect(pci.length).toBe(countLinesStartingWith(text, 'alias pci:'));
      expect(vfio.length).toBe(countLinesStartingWith(text, 'alias vfio_pci:'));
      expect(pci.length).toBeGreaterThan(6000);
      expect(parsed.totalLines).toBe(lines.length);
    });

    it('records each entry with the line it came from, in file order', () => {
      let previous = 0;
      for (const entry of parsed.entries) {
        expect(lines[entry.line - 1]).toBe(`alias ${entry.pattern} ${entry.module}`);
        expect(entry.line).toBeGreaterThan(previous);
        previous = entry.line;
      }
    });

    it('has the same vfio_pci aliases as the extracted .vfio_pci.txt', () => {
      const expected = readTestdata('modules-alias', `${label}.vfio_pci.txt`)
        .split('\n')
        .filter((line) => line !== '');
      const got = parsed.entries
        .filter((e) => e.bus === 'vfio_pci')
        .map((e) => `alias ${e.pattern} ${e.module}`);
      expect(got).toEqual(expected);
    });

    it('reports no malformed line: blanks inside a non-PCI alias are real depmod output', () => {
      // Real arm64 files contain MODULE_ALIAS strings with blanks (MediaTek sound cards), which
      // depmod writes verbatim: `alias mt8183_da7219_max98357 soc card mt8183_da7219_max98357`.
      // They are other aliases (skipped), not damage.
      expect(parsed.errors).toEqual([]);
      const aliases = lines.filter((l) => l.startsWith('alias ')).length;
      expect(parsed.otherAliases).toBe(aliases - parsed.entries.length);
    });
  });

  it('parses the largest real file quickly (one pass, no per-line backtracking)', () => {
    const text = readModulesAlias('7.2.13+deb14-arm64');
    parseModulesAlias(text);
    const started = performance.now();
    const parsed = parseModulesAlias(text);
    // A loose bound, far above the ~10 ms it takes, that only a quadratic parser would break.
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(parsed.totalLines).toBeGreaterThan(30_000);
  });
});

describe('parseModulesAlias on damaged input', () => {
  const text = [
    '# Aliases extracted from modules themselves.', // 1
    'alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e', // 2 good
    'alias pci:v*d*sv*sd*bc01sc06i01*', // 3 no module
    'alias', // 4 nothing
    'alis pci:v00001234d*sv*sd*bc*sc*i* typo', // 5 not an alias line
    'alias pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio net', // 6 extra field
    'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5-vfio-pci', // 7 good, dashes
    'alias pci:v0000ABCDd*sv*sd*bc*sc*i* bad/name', // 8 bad module char
    '', // 9
    '   # an indented comment', // 10
    'alias usb:v1234p*d*dc*dsc*dp*ic*isc*ip*in* usbthing', // 11 other bus
    'alias\tpci:v0000AAAAd*sv*sd*bc*sc*i*\tmodtab', // 12 good, tabs
    `alias pci:v0000BBBBd*sv*sd*bc*sc*i* ${'m'.repeat(56)}`, // 13 module name too long
    'alias fs-ext4 ext4\r', // 14 other, CRLF
    'alias mt8186_mt6366 soc card mt8186_mt6366', // 15 other, blanks as depmod writes them
    'alias pci:v0000CCCCd*sv*sd*bc*sc*i* mod\u00e9', // 16 non-ASCII module name
    'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci', // 17 good, no trailing newline
  ].join('\n');
  const parsed = parseModulesAlias(text);

  it('reports every malformed line with its line number and a reason', () => {
    expect(parsed.errors.map((e) => e.line)).toEqual([3, 4, 5, 6, 8, 13, 16]);
    for (const error of parsed.errors) {
      expect(error.text).toBe(text.split('\n')[error.line - 1]);
      expect(error.message.length).toBeGreaterThan(10);
    }
    expect(parsed.errors.find((e) => e.line === 8)?.message).toContain('"/"');
    expect(parsed.errors.find((e) => e.line === 13)?.message).toContain('55');
  });

  it('keeps the good lines, normalizing module names like kmod', () => {
    expect(parsed.entries).toEqual([
      {
        pattern: 'pci:v00008086d000010D3sv*sd*bc*sc*i*',
        module: 'e1000e',
        line: 2,
        bus: 'pci',
      },
      {
        pattern: 'vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i*',
        module: 'mlx5_vfio_pci',
        line: 7,
        bus: 'vfio_pci',
      },
      { pattern: 'pci:v0000AAAAd*sv*sd*bc*sc*i*', module: 'modtab', line: 12, bus: 'pci' },
      { pattern: 'vfio_pci:v*d*sv*sd*bc*sc*i*', module: 'vfio_pci', line: 17, bus: 'vfio_pci' },
    ]);
    expect(parsed.otherAliases).toBe(3);
    expect(parsed.totalLines).toBe(17);
  });

  it('treats an empty file as empty, not as an error', () => {
    expect(parseModulesAlias('')).toEqual({
      entries: [],
      errors: [],
      totalLines: 0,
      otherAliases: 0,
    });
  });
});
