// The real server as its own process (`src/main.ts` through tsx, as `npm start` runs it), for
// attacks whose effect is on the process itself (its threadpool, its limits): on PGlite in a
// temporary data directory, or on a scratch PostgreSQL database. Plus a raw HTTP client that can
// pick its source address (all of 127.0.0.0/8 is this host), so a test can be several clients.
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingHttpHeaders, request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { DbDriver } from '@vfio-fleet/db';
import { scratchPostgres } from './harness';
import { type MainProcess, startMainProcess } from './main-process';

export interface ServerProcess {
  child: MainProcess;
  /** http://127.0.0.1:PORT */
  url: string;
  close(): Promise<void>;
}

/** Starts main.ts (no UI, no local agent) with `env` on top, and waits until it listens. */
export async function startServerProcess(
  driver: DbDriver,
  env: Record<string, string> = {},
): Promise<ServerProcess> {
  const tmp = await mkdtemp(path.join(tmpdir(), 'web-server-process-'));
  const scratch = driver === 'postgres' ? await scratchPostgres() : null;
  const cleanUp = async () => {
    await scratch?.drop();
    await rm(tmp, { recursive: true, force: true });
  };
  let child: MainProcess & { url: string };
  try {
    child = await startMainProcess(
      { DATABASE_URL: scratch?.url ?? '', VFIO_FLEET_DATA_DIR: path.join(tmp, 'data'), ...env },
      60_000,
    );
  } catch (error) {
    await cleanUp();
    throw error;
  }
  return {
    child,
    url: child.url,
    async close() {
      await child.kill('SIGTERM', 5_000);
      await cleanUp();
    },
  };
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** From sending the request to the end of the answer. */
  ms: number;
}

/** One HTTP request on its own connection, from `from` (a loopback address) when given. */
export function httpRequest(
  url: string,
  options: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    from?: string;
  } = {},
): Promise<RawResponse> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.headers,
        localAddress: options.from,
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            ms: performance.now() - started,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}
