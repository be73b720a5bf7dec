/**
 * Next.js inside our own HTTP server (a "custom server"): Next only renders the UI; the agents'
 * WebSocket, the tRPC API, /api/health and /metrics are served by server.ts before a request
 * reaches Next. Production mode only: `next build` (the package's build script, run by
 * `npm install`'s prepare) must have produced apps/web/.next.
 */
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import { ServerError } from './errors';

export type NextHandler = (req: IncomingMessage, res: ServerResponse) => Promise<void>;

/** apps/web: where app/, next.config.ts and .next live. */
export const WEB_DIR = path.resolve(import.meta.dirname, '..');

export interface NextApp {
  handle: NextHandler;
  close(): Promise<void>;
}

/**
 * The build directory, relative to apps/web: `.next`, or VFIO_FLEET_NEXT_DIST_DIR so that several
 * builds can live side by side (next.config.ts reads the same variable at build and at start).
 */
export function nextDistDir(env: Record<string, string | undefined> = process.env): string {
  return env.VFIO_FLEET_NEXT_DIST_DIR || '.next';
}

export function hasNextBuild(dir: string = WEB_DIR): boolean {
  return existsSync(path.join(dir, nextDistDir(), 'BUILD_ID'));
}

export async function createNextHandler(options: { dir?: string } = {}): Promise<NextApp> {
  const dir = options.dir ?? WEB_DIR;
  if (!hasNextBuild(dir)) {
    throw new ServerError(
      'bad-config',
      `no Next.js build in ${path.join(dir, nextDistDir())}: run \`npm run build --workspace @vfio-fleet/web\``,
    );
  }
  // Imported here, not at the top: Next is large, and the tests and tools that start the server
  // without a UI should not pay for loading it.
  const imported = await import('next');
  // Next is CommonJS: its function is the default export (or that export's own default).
  const mod = imported.default as unknown as { default?: unknown };
  const createNext = (
    typeof mod === 'function' ? mod : mod.default
  ) as typeof import('next').default;
  // Next.js attaches an `upgrade` listener to the server of its first request unless given one of
  // its own, and that listener leaves a socket it has no route for open (the leak upgrade.ts
  // closes). It gets a server that never listens: the gateway answers every upgrade on the port. A
  // dev server's HMR socket would have to be routed there explicitly (app.getUpgradeHandler()).
  const app = createNext({ dev: false, dir, httpServer: createServer() });
  await app.prepare();
  const handle = app.getRequestHandler();
  return {
    handle: (req, res) => handle(req, res),
    close: () => app.close(),
  };
}
