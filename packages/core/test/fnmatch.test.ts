import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fnmatch } from '../src/kmod/fnmatch';

// Every expected value below was produced by glibc 2.36's own fnmatch(pattern, text, 0) in the C
// locale (a 5-line C program), not by reasoning about the code under test. The odd-looking rows
// pin glibc's quirks, which kmod inherits: `[!]` and `[[a` are unterminated so their `[` is a
// literal, a lone trailing backslash never matches, an unknown class name fails the pattern.
const GLIBC_CASES: ReadonlyArray<readonly [pattern: string, text: string, matches: boolean]> = [
  ['', '', true],
  ['', 'a', false],
  ['a', '', false],
  ['*', '', true],
  ['?', '', false],
  ['abc', 'abc', true],
  ['abc', 'abd', false],
  ['abc', 'ABC', false],
  ['ABC', 'abc', false],
  ['a*c', 'abbbc', true],
  ['a*c', 'ac', true],
  ['a*c', 'ab', false],
  ['a*c', 'abcx', false],
  ['*', '/.hidden', true],
  ['*/*', 'a/b', true],
  ['?', '/', true],
  ['?', '.', true],
  ['*', '.profile', true],
  ['a*', 'a/b/c', true],
  ['a?c', 'abc', true],
  ['a?c', 'ac', false],
  ['??', 'a', false],
  ['*?', 'a', true],
  ['*?*?', 'a', false],
  ['*?*?', 'ab', true],
  ['***a', 'a', true],
  ['a**b**c', 'abc', true],
  ['**', 'anything', true],
  ['*ab*ab', 'xabyab', true],
  ['*aab', 'aaab', true],
  ['*a*b', 'aaa', false],
  ['a*b*c*d', 'abXcYdZd', true],
  ['a*b*c*d', 'abXcYdZ', false],
  ['a*a*a*a*a*a*a*a*b', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', false],
  ['*x*y*z', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy', false],
  ['\\*', '*', true],
  ['\\*', 'a', false],
  ['\\?', '?', true],
  ['\\?', 'a', false],
  ['\\a', 'a', true],
  ['\\\\', '\\', true],
  ['a\\', 'a', false],
  ['a\\', 'a\\', false],
  ['\\', '\\', false],
  ['\\', '', false],
  ['*\\', 'a\\', false],
  ['\\[a]', '[a]', true],
  ['\\[a]', 'a', false],
  ['[abc]', 'b', true],
  ['[abc]', 'd', false],
  ['[abc]', '', false],
  ['[!abc]', 'd', true],
  ['[!abc]', 'a', false],
  ['[^abc]', 'd', true],
  ['[^abc]', 'a', false],
  ['[a-c]', 'b', true],
  ['[a-c]', 'd', false],
  ['[c-a]', 'b', false],
  ['[c-a]', 'c', false],
  ['[-a]', '-', true],
  ['[a-]', '-', true],
  ['[a-]', 'b', false],
  ['[0-9A-F]', 'B', true],
  ['[0-9A-F]', 'b', false],
  ['[]a]', ']', true],
  ['[]a]', 'a', true],
  ['[]a]', 'b', false],
  ['[!]a]', ']', false],
  ['[!]a]', 'b', true],
  ['[]-a]', '^', true],
  ['[!]', '[!]', true],
  ['[!]', '!', false],
  ['[]', '[]', true],
  ['[', '[', true],
  ['[', '', false],
  ['[a', '[a', true],
  ['[a', 'a', false],
  ['[ab', 'b', false],
  ['[[a', '[[a', true],
  ['x[', 'x[', true],
  ['[\\]]', ']', true],
  ['[\\-a]', '-', true],
  ['[a\\-c]', 'b', false],
  ['[a\\-c]', '-', true],
  ['[\\', '[\\', false],
  ['[\\!a]', '!', true],
  ['[*]', '*', true],
  ['[*]', 'a', false],
  ['[?]', 'a', false],
  ['[?]', '?', true],
  ['[[:alpha:]]', 'a', true],
  ['[[:alpha:]]', '1', false],
  ['[[:digit:]]', '5', true],
  ['[[:upper:]]', 'a', false],
  ['[[:lower:]]', 'a', true],
  ['[[:xdigit:]]', 'F', true],
  ['[[:xdigit:]]', 'g', false],
  ['[[:space:]]', ' ', true],
  ['[[:space:]]', '\t', true],
  ['[[:blank:]]', '\n', false],
  ['[[:punct:]]', '!', true],
  ['[[:punct:]]', 'a', false],
  ['[[:alnum:]_]', '_', true],
  ['[![:digit:]]', 'a', true],
  ['[![:digit:]]', '7', false],
  ['[[:cntrl:]]', '\u0001', true],
  ['[[:print:]]', ' ', true],
  ['[[:graph:]]', ' ', false],
  ['[[:foo:]]', 'a', false],
  ['[[:alpha:]', '[[:alpha:]', false],
  ['[[:]', ':', true],
  ['[[:]', '[', true],
  ['[[:Alpha:]]', 'A', false],
  ['[[=a=]]', 'a', true],
  ['[[=a=]]', 'b', false],
  ['[[.a.]]', 'a', true],
  ['[[.-.]]', '-', true],
  ['[[.ab.]]', 'a', false],
  [
    'pci:v00008086d000010D3sv*sd*bc*sc*i*',
    'pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00',
    true,
  ],
  [
    'pci:v00008086d000010D3sv*sd*bc*sc*i*',
    'pci:v00008086d000010d3sv00008086sd0000A01Fbc02sc00i00',
    false,
  ],
  ['vfio_pci:v*d*sv*sd*bc*sc*i*', 'pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00', false],
  [
    'vfio_pci:v*d*sv*sd*bc*sc*i*',
    'vfio_pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00',
    true,
  ],
  ['pci:v*d*sv*sd*bc0Csc03i30*', 'pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30', true],
  ['pci:v*d*sv*sd*bc0Csc03i30*', 'pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i20', false],
  ['mdio:000000000100110111010000011?0110', 'mdio:00000000010011011101000001100110', true],
];

describe('fnmatch', () => {
  it.each(GLIBC_CASES)('fnmatch(%j, %j) is %s, as in glibc', (pattern, text, matches) => {
    expect(fnmatch(pattern, text)).toBe(matches);
  });

  it('stays linear on patterns that make naive backtracking explode', () => {
    // A recursive matcher needs ~C(40, 20) steps here; the single-backtrack algorithm ~40×40.
    const pattern = `${'*a'.repeat(20)}b`;
    const text = 'a'.repeat(4000);
    const started = performance.now();
    expect(fnmatch(pattern, text)).toBe(false);
    expect(fnmatch(pattern, `${text}b`)).toBe(true);
    // Generous bound: only an exponential algorithm could come anywhere near it.
    expect(performance.now() - started).toBeLessThan(10_000);
  });

  it('agrees with a RegExp translation on patterns made of literals, `*` and `?`', () => {
    const reference = (pattern: string, text: string): boolean => {
      let source = '';
      for (const ch of pattern) {
        if (ch === '*') source += '[\\s\\S]*';
        else if (ch === '?') source += '[\\s\\S]';
        else source += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      }
      return new RegExp(`^${source}$`).test(text);
    };
    const patternChar = fc.constantFrom('a', 'b', 'c', '*', '?', '.', '/', ':', '-');
    const textChar = fc.constantFrom('a', 'b', 'c', '.', '/', ':', '-', '*', '?');
    fc.assert(
      fc.property(
        fc.array(patternChar, { maxLength: 12 }).map((chars) => chars.join('')),
        fc.array(textChar, { maxLength: 16 }).map((chars) => chars.join('')),
        (pattern, text) => {
          expect(fnmatch(pattern, text)).toBe(reference(pattern, text));
        },
      ),
      { numRuns: 5000 },
    );
  });

  it('agrees with the RegExp translation when the text is built to match', () => {
    // Random pairs rarely match; here the text is the pattern with its wildcards filled in.
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', '*', '?', 'x'), { minLength: 1, maxLength: 10 }),
        fc.array(fc.constantFrom('', 'a', 'ab', 'ba', 'xx'), { minLength: 10, maxLength: 10 }),
        (chars, fills) => {
          const pattern = chars.join('');
          const text = chars
            .map((ch, i) => (ch === '*' ? (fills[i] ?? '') : ch === '?' ? 'q' : ch))
            .join('');
          expect(fnmatch(pattern, text)).toBe(true);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
