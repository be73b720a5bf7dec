// Where the login page sends the browser after signing in (app/login/next-path.ts): only to a page
// of the console's own origin, whatever `?next=` says. The attack strings are those a browser reads
// as another host although they look like a path.
import { describe, expect, it } from 'vitest';
import { afterLoginPath } from '../app/login/next-path';

const origin = 'http://fleet.example:3000';

/** What the page does: `next` as URLSearchParams decodes it from the query. */
const fromQuery = (query: string) => afterLoginPath(new URLSearchParams(query).get('next'), origin);

describe('afterLoginPath', () => {
  it('keeps a page of this console, with its query and hash', () => {
    expect(afterLoginPath('/hosts?state=online#top', origin)).toBe('/hosts?state=online#top');
    expect(afterLoginPath('/admin/tokens', origin)).toBe('/admin/tokens');
    expect(afterLoginPath(`${origin}/jobs`, origin)).toBe('/jobs');
    expect(afterLoginPath('devices', origin)).toBe('/devices');
    // Encoded, a backslash is only a character of a path here.
    expect(afterLoginPath('/%5Cevil.example/x', origin)).toBe('/%5Cevil.example/x');
    expect(fromQuery('next=%2Fhosts%3Fstate%3Donline')).toBe('/hosts?state=online');
    expect(afterLoginPath(null, origin)).toBe('/');
    expect(afterLoginPath('', origin)).toBe('/');
  });

  it('sends anything that leaves this origin to the overview instead', () => {
    const attacks = [
      '//evil.example',
      '//evil.example/x',
      '/\\evil.example/x',
      '/\\/evil.example',
      '\\\\evil.example',
      '/\t/evil.example',
      '/\n/evil.example',
      ' //evil.example',
      '/.//evil.example',
      '/./\\evil.example',
      'https://evil.example/x',
      'https:evil.example',
      'https:/evil.example',
      'ftp://evil.example',
      'http://fleet.example:3000.evil.example/',
      'http://fleet.example:3000@evil.example/',
      'http://fleet.example:3001/',
      'javascript:alert(document.cookie)',
      'data:text/html,<script>alert(1)</script>',
      'http://[::1',
    ];
    for (const next of attacks)
      expect(afterLoginPath(next, origin), JSON.stringify(next)).toBe('/');
    // As they arrive in the login page's query string.
    for (const query of [
      'next=/%5Cevil.example/x',
      'next=/%09/evil.example',
      'next=%2F%2Fevil.example',
      'next=/%5C/evil.example',
      'next=%5C%5Cevil.example',
      'next=https%3A%2F%2Fevil.example',
      'next=https:evil.example',
      'next=/%2E//evil.example',
    ]) {
      expect(fromQuery(query), query).toBe('/');
    }
  });
});
