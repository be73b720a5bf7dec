/**
 * glibc fnmatch(3) with flags 0, which is what kmod uses to match a device's modalias against the
 * wildcard patterns of modules.alias (`fnmatch(pattern, modalias, 0)`). Reproducing glibc exactly,
 * quirks included, is the point: a "nicer" glob would pick a different driver than modprobe does.
 *
 * Scope: ASCII in the C locale (modaliases and modules.alias are ASCII). Character classes are the
 * C-locale ones; ranges compare code units, as glibc does in the C locale. One deliberate
 * difference: a JS string is matched whole, whereas C would stop at a NUL; neither sysfs nor
 * modules.alias can contain a NUL, so this never changes a result that matters.
 *
 * glibc is recursive but, between two `*`, it commits to the first position where the segment
 * matches (its `ends` bookkeeping). That is exactly the classic single-backtrack-point algorithm
 * used here, which runs in O(pattern × text) at worst instead of exponential time.
 */

const STAR = 0x2a; // *
const QUESTION = 0x3f; // ?
const BACKSLASH = 0x5c; // \
const OPEN = 0x5b; // [
const CLOSE = 0x5d; // ]
const BANG = 0x21; // !
const CARET = 0x5e; // ^
const COLON = 0x3a; // :
const EQUALS = 0x3d; // =
const DOT = 0x2e; // .
const DASH = 0x2d; // -
const LOWER_A = 0x61;
const LOWER_Z = 0x7a;
/** Stands for C's terminating NUL: reading past the end of the pattern. */
const END = -1;
/** Returned by a bracket match: this element cannot match this character. */
const FAIL = -1;
/** glibc's CHAR_CLASS_MAX_LENGTH when built as libc: longer class names make the pattern fail. */
const CHAR_CLASS_MAX_LENGTH = 256;

function isUpper(c: number): boolean {
  return c >= 0x41 && c <= 0x5a;
}
function isLower(c: number): boolean {
  return c >= 0x61 && c <= 0x7a;
}
function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}
function isAlpha(c: number): boolean {
  return isUpper(c) || isLower(c);
}
function isGraph(c: number): boolean {
  return c >= 0x21 && c <= 0x7e;
}

/** The C locale's ctype classes; undefined for a name glibc does not know (the pattern then fails). */
const CHAR_CLASSES: ReadonlyMap<string, (c: number) => boolean> = new Map([
  ['alnum', (c: number) => isAlpha(c) || isDigit(c)],
  ['alpha', isAlpha],
  ['blank', (c: number) => c === 0x20 || c === 0x09],
  ['cntrl', (c: number) => c < 0x20 || c === 0x7f],
  ['digit', isDigit],
  ['graph', isGraph],
  ['lower', isLower],
  ['print', (c: number) => c >= 0x20 && c <= 0x7e],
  ['punct', (c: number) => isGraph(c) && !isAlpha(c) && !isDigit(c)],
  ['space', (c: number) => c === 0x20 || (c >= 0x09 && c <= 0x0d)],
  ['upper', isUpper],
  ['xdigit', (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)],
]);

/** Code unit at `i`, or END past the end (C's `*p` reading the NUL). */
function at(s: string, i: number): number {
  return i < s.length ? s.charCodeAt(i) : END;
}

/**
 * Matches the bracket expression whose `[` is at `open` against one text character `fn`.
 * Returns the pattern index to continue from, or FAIL. This is a transcription of glibc's
 * fnmatch_loop.c `case '['` for the C locale (no collation rules), so its odd corners hold too:
 * an unterminated `[` is a literal `[`, `[=x=]` and `[.x.]` accept single characters only, a bad
 * class name or a `[.x.]` inside an unterminated bracket fails the whole element.
 */
function matchBracket(pattern: string, open: number, fn: number): number {
  const pInit = open + 1;
  let p = pInit;
  const negated = at(pattern, p) === BANG || at(pattern, p) === CARET;
  if (negated) p++;

  // `cold` is the previous member, the low end of a possible range.
  let cold = 0;
  let c = at(pattern, p++);
  let matched = false;
  // Mirrors the C loop: each branch leaves the next unread member in `c`, or jumps to
  // the shared "single member" code (glibc's `normal_bracket` label) through `normal`.
  for (;;) {
    let normal = false;
    let canStartRange = false;
    if (c === BACKSLASH) {
      if (at(pattern, p) === END) return FAIL;
      c = at(pattern, p++);
      normal = true;
    } else if (c === OPEN && at(pattern, p) === COLON) {
      const startp = p;
      let name = '';
      let isClass = true;
      for (;;) {
        if (name.length === CHAR_CLASS_MAX_LENGTH) return FAIL;
        c = at(pattern, ++p);
        if (c === COLON && at(pattern, p + 1) === CLOSE) {
          p += 2;
          break;
        }
        if (c < LOWER_A || c >= LOWER_Z) {
          // Not a class name after all: `[` is an ordinary member, rescanned from the `:`.
          p = startp;
          c = OPEN;
          isClass = false;
          break;
        }
        name += String.fromCharCode(c);
      }
      if (isClass) {
        const test = CHAR_CLASSES.get(name);
        if (test === undefined) return FAIL;
        if (test(fn)) {
          matched = true;
          break;
        }
        c = at(pattern, p++);
      } else {
        normal = true;
      }
    } else if (c === OPEN && at(pattern, p) === EQUALS) {
      // Equivalence class; in the C locale `[=x=]` is just x.
      const startp = p;
      const str = at(pattern, ++p);
      if (str === END || at(pattern, ++p) !== EQUALS || at(pattern, p + 1) !== CLOSE) {
        p = startp;
        c = OPEN;
        normal = true;
      } else {
        p += 2;
        if (fn === str) {
          matched = true;
          break;
        }
        c = at(pattern, p++);
      }
    } else if (c === END) {
      // Unterminated: the `[` was an ordinary character after all.
      return fn === OPEN ? pInit : FAIL;
    } else if (c === OPEN && at(pattern, p) === DOT) {
      // Collating symbol; the C locale only knows single characters, `[.x.]`.
      const startp = p;
      let length = 0;
      for (;;) {
        c = at(pattern, ++p);
        if (c === DOT && at(pattern, p + 1) === CLOSE) {
          p += 2;
          break;
        }
        if (c === END) return FAIL;
        length++;
      }
      if (length !== 1) return FAIL;
      // glibc does not check for `]` here, unlike for plain members: `[[.a.]-]` is no range
      // yet `a` is not matched directly either. Reproduced on purpose.
      const isRange = at(pattern, p) === DASH && at(pattern, p + 1) !== END;
      const sym = pattern.charCodeAt(startp + 1);
      if (!isRange && fn === sym) {
        matched = true;
        break;
      }
      cold = sym;
      c = at(pattern, p++);
      canStartRange = true;
    } else {
      normal = true;
    }

    if (normal) {
      canStartRange = true;
      const isRange =
        at(pattern, p) === DASH && at(pattern, p + 1) !== END && at(pattern, p + 1) !== CLOSE;
      if (!isRange && c === fn) {
        matched = true;
        break;
      }
      cold = c;
      c = at(pattern, p++);
    }

    // Only a single character or a collating symbol can start a range; after a class or an
    // equivalence class a `-` is read as an ordinary member on the next turn, as in glibc.
    if (canStartRange && c === DASH && at(pattern, p) !== CLOSE) {
      let cend = at(pattern, p++);
      if (cend === OPEN && at(pattern, p) === DOT) {
        const startp = p;
        let length = 0;
        for (;;) {
          c = at(pattern, ++p);
          if (c === DOT && at(pattern, p + 1) === CLOSE) {
            p += 2;
            break;
          }
          if (c === END) return FAIL;
          length++;
        }
        if (length !== 1) return FAIL;
        cend = pattern.charCodeAt(startp + 1);
      } else {
        if (cend === BACKSLASH) cend = at(pattern, p++);
        if (cend === END) return FAIL;
      }
      if (cold <= fn && fn <= cend) {
        matched = true;
        break;
      }
      c = at(pattern, p++);
    }

    if (c === CLOSE) break;
  }

  if (!matched) return negated ? p : FAIL;
  return skipRestOfBracket(pattern, p, negated, fn, pInit);
}

/** After a member matched: find the closing `]` the way glibc skips over the remaining members. */
function skipRestOfBracket(
  pattern: string,
  from: number,
  negated: boolean,
  fn: number,
  pInit: number,
): number {
  let p = from;
  for (;;) {
    const c = at(pattern, p++);
    if (c === CLOSE) break;
    // Unterminated after all: the `[` is a literal (glibc >= 2.33; older ones failed here).
    if (c === END) return fn === OPEN ? pInit : FAIL;
    if (c === BACKSLASH) {
      if (at(pattern, p) === END) return FAIL;
      p++;
    } else if (c === OPEN && at(pattern, p) === COLON) {
      let length = 0;
      const startp = p;
      for (;;) {
        const d = at(pattern, ++p);
        if (++length === CHAR_CLASS_MAX_LENGTH) return FAIL;
        if (at(pattern, p) === COLON && at(pattern, p + 1) === CLOSE) break;
        if (d < LOWER_A || d >= LOWER_Z) {
          p = startp - 2;
          break;
        }
      }
      p += 2;
    } else if (c === OPEN && at(pattern, p) === EQUALS) {
      if (at(pattern, ++p) === END) return FAIL;
      const d = at(pattern, ++p);
      if (d !== EQUALS || at(pattern, p + 1) !== CLOSE) return FAIL;
      p += 2;
    } else if (c === OPEN && at(pattern, p) === DOT) {
      for (;;) {
        const d = at(pattern, ++p);
        if (d === END) return FAIL;
        if (d === DOT && at(pattern, p + 1) === CLOSE) break;
      }
      p += 2;
    }
  }
  return negated ? FAIL : p;
}

/**
 * True when `text` matches the shell wildcard `pattern` exactly as glibc's
 * `fnmatch(pattern, text, 0)` decides: `*`, `?`, `[...]`, backslash escapes; `*` and `?` match
 * `/` and a leading `.` because no flags are set; case-sensitive.
 */
export function fnmatch(pattern: string, text: string): boolean {
  const plen = pattern.length;
  const tlen = text.length;
  let p = 0;
  let n = 0;
  // The single backtrack point: where the pattern resumes after the last `*`, and the text
  // position that `*` currently stops at. Earlier stars never need revisiting (see the header).
  let starP = -1;
  let starN = 0;

  while (p < plen || n < tlen) {
    if (p < plen) {
      const c = pattern.charCodeAt(p);
      if (c === STAR) {
        p++;
        starP = p;
        starN = n;
        continue;
      }
      if (n < tlen) {
        const t = text.charCodeAt(n);
        let next = FAIL;
        if (c === QUESTION) {
          next = p + 1;
        } else if (c === BACKSLASH) {
          // A trailing lone backslash never matches anything.
          if (p + 1 < plen && pattern.charCodeAt(p + 1) === t) next = p + 2;
        } else if (c === OPEN) {
          next = matchBracket(pattern, p, t);
        } else if (c === t) {
          next = p + 1;
        }
        if (next !== FAIL) {
          p = next;
          n++;
          continue;
        }
      }
    }
    // Mismatch: let the last `*` swallow one more character and retry the segment after it.
    if (starP >= 0 && starN < tlen) {
      starN++;
      p = starP;
      n = starN;
      continue;
    }
    return false;
  }
  return true;
}
