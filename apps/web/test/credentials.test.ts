// Secrets the server hands out: enrollment tokens are pasted into `--token TOKEN`, so none may
// start with '-' (node's parseArgs reads that as an option and the agent refuses the command).
import { describe, expect, it } from 'vitest';
import { hashSecret, newSecret, secretMatches } from '../src/gateway/credentials';

describe('newSecret', () => {
  it('never starts with a character a command line would read as an option', () => {
    // Without the guard, 1 in 32 base64url secrets starts with '-' or '_': 3,000 draws would
    // show dozens.
    const secrets = Array.from({ length: 3_000 }, () => newSecret());
    expect(secrets.filter((s) => !/^[A-Za-z0-9]/.test(s))).toEqual([]);
    expect(new Set(secrets).size).toBe(secrets.length);
    for (const s of secrets.slice(0, 10)) expect(s).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('is checked against its stored hash only', () => {
    const secret = newSecret();
    expect(secretMatches(secret, hashSecret(secret))).toBe(true);
    expect(secretMatches(`${secret}x`, hashSecret(secret))).toBe(false);
  });
});
