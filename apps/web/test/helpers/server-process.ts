// The real server as its own process (`src/main.ts` through tsx, as `npm start` runs it), for
// attacks whose effect is on the process itself (its threadpool, its limits): on PGlite in a
// temporary data directory, or on a scratch PostgreSQL database. Plus a raw HTTP client that can
// pick its source address (all of 127.0.0.0/8 is this host), so a test can be several clients.
import { mkdtemp, rm } from 'node:fs/promises';
import { type IncomingHttpHeaders, request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { DbDriver } from '@vfio-fleet/db';
import { type Child, serverEntry, spawnChild } from '../../../../e2e/src/processes';
import { poll, scratchPostgres } from './harness';

export interface ServerProcess {
  child: Child;
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
  const child = spawnChild(process.execPath, ['--import', 'tsx', serverEntry], {
    cwd: path.dirname(path.dirname(serverEntry)),
    env: {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      DATABASE_URL: scratch?.url ?? '',
      VFIO_FLEET_DATA_DIR: path.join(tmp, 'data'),
      VFIO_FLEET_UI: '0',
      VFIO_FLEET_LOCAL_AGENT: '0',
      ...env,
    },
  });
  const close = async () => {
    await child.stop(5_000);
    await scratch?.drop();
    await rm(tmp, { recursive: true, force: true });
  };
  // main.ts logs its URL once it listens (`server listening`, at info).
  const url = await poll(() => {
    if (child.child.exitCode !== null) return null;
    return /"url":"(http:[^"]+)"/.exec(child.output())?.[1];
  }, 60_000);
  if (url === undefined || url === null) {
    await close();
    throw new Error(`the server did not start:\n${child.output()}`);
  }
  return { child, url, close };
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
