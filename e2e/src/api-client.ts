/**
 * A tRPC client over real HTTP for the suite's own setup (creating users and enrollment tokens as
 * admin, reading job ids): its fetch keeps the session cookie the way a browser would. The browser
 * journeys never use it to check what the UI shows.
 */
import { createTRPCClient, httpLink } from '@trpc/client';
import type { AppRouter } from '@vfio-fleet/web';

export type Api = ReturnType<typeof createTRPCClient<AppRouter>>;

export interface ApiSession {
  api: Api;
  /** The session cookie as `name=value`, or null before a login. */
  cookie(): string | null;
}

export function apiClient(baseUrl: string): ApiSession {
  let cookie: string | null = null;
  const keepCookie = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const headers = new Headers(init?.headers);
    if (cookie !== null) headers.set('cookie', cookie);
    const res = await fetch(input, { ...init, headers });
    const set = res.headers.get('set-cookie');
    if (set !== null) {
      const pair = set.split(';')[0] ?? '';
      cookie = pair.endsWith('=') ? null : pair;
    }
    return res;
  };
  const api = createTRPCClient<AppRouter>({
    links: [httpLink({ url: `${baseUrl}/api/trpc`, fetch: keepCookie })],
  });
  return { api, cookie: () => cookie };
}

/** A session signed in as `username` through auth.login. */
export async function signedInSession(
  baseUrl: string,
  username: string,
  password: string,
): Promise<ApiSession> {
  const session = apiClient(baseUrl);
  await session.api.auth.login.mutate({ username, password });
  return session;
}

/** A client signed in as `username`. */
export async function signedIn(baseUrl: string, username: string, password: string): Promise<Api> {
  return (await signedInSession(baseUrl, username, password)).api;
}
