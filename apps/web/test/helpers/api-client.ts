// A tRPC client over real HTTP (createTRPCClient + httpLink) whose fetch keeps the session cookie
// the way a browser would, and remembers the last Set-Cookie header for assertions on its flags.
import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import type { AppRouter } from '../../src/api/root';

export interface ApiClient {
  api: ReturnType<typeof createTRPCClient<AppRouter>>;
  /** `name=value` sent as Cookie, or null. */
  cookie: string | null;
  lastSetCookie: string | null;
}

export function apiClient(baseUrl: string, extraHeaders: Record<string, string> = {}): ApiClient {
  const state: ApiClient = {
    api: undefined as unknown as ApiClient['api'],
    cookie: null,
    lastSetCookie: null,
  };
  const keepCookies = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const headers = new Headers(init?.headers);
    for (const [name, value] of Object.entries(extraHeaders)) headers.set(name, value);
    if (state.cookie !== null) headers.set('cookie', state.cookie);
    const res = await fetch(input, { ...init, headers });
    const set = res.headers.get('set-cookie');
    if (set !== null) {
      state.lastSetCookie = set;
      const pair = set.split(';')[0] ?? '';
      state.cookie = pair.endsWith('=') ? null : pair;
    }
    return res;
  };
  state.api = createTRPCClient<AppRouter>({
    links: [httpLink({ url: `${baseUrl}/api/trpc`, fetch: keepCookies })],
  });
  return state;
}

/** The error a call rejects with: its tRPC code (`UNAUTHORIZED`...), HTTP status and message. */
export async function failure(
  call: Promise<unknown>,
): Promise<{ code: string; status: number; message: string; fields: string[] }> {
  try {
    await call;
  } catch (error) {
    if (error instanceof TRPCClientError) {
      const data = (error.data ?? {}) as { code?: string; httpStatus?: number; fields?: string[] };
      return {
        code: data.code ?? 'unknown',
        status: data.httpStatus ?? 0,
        message: error.message,
        fields: data.fields ?? [],
      };
    }
    throw error;
  }
  throw new Error('the call succeeded');
}
