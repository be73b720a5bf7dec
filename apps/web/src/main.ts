/**
 * The server's entry point: environment, database (migrated on start), HTTP + agent gateway, and
 * a clean shutdown on SIGTERM/SIGINT (agents are told the server is going away and reconnect to
 * another process or to this one when it is back).
 */
import path from 'node:path';
import { createDb, DEFAULT_DATA_DIR } from '@vfio-fleet/db';
import { ensureAdmin } from './auth/bootstrap-admin';
import { parseServerEnv } from './env';
import { errorMessage } from './errors';
import { type LocalAgent, localServerUrl, startLocalAgent } from './local-agent';
import { createLogger } from './logger';
import { createNextHandler, hasNextBuild, type NextApp } from './next-handler';
import { startServer } from './server';

async function main(): Promise<void> {
  const env = parseServerEnv(process.env);
  const logger = createLogger(env.VFIO_FLEET_LOG_LEVEL);
  const handle = await createDb({
    env: process.env,
    onNotice: (message) => logger.warn(message),
    apiStatementTimeoutMs: env.VFIO_FLEET_API_QUERY_TIMEOUT_MS,
  });
  await handle.migrate();
  logger.info({ driver: handle.driver }, 'database migrated');
  await ensureAdmin(handle.db, { password: env.ADMIN_PASSWORD }, logger);
  // Next.js is prepared before the port opens, so the first page request is not the slow one.
  // Without a build the fleet still runs (agents, API, health, metrics), and the log says why
  // there is no UI rather than the process refusing to start.
  let ui: NextApp | null = null;
  if (env.VFIO_FLEET_UI === '1') {
    if (hasNextBuild()) ui = await createNextHandler();
    else logger.warn('no Next.js build (run `npm run build`): serving no UI');
  }
  const server = await startServer({
    port: env.PORT,
    host: env.HOST,
    db: handle.db,
    apiDb: handle.apiDb,
    listen: handle.listen,
    logger,
    heartbeatSeconds: env.VFIO_FLEET_HEARTBEAT_SECONDS,
    sessionTtlHours: env.SESSION_TTL_HOURS,
    next: ui?.handle,
    metricsToken: env.METRICS_TOKEN,
    trustProxy: env.VFIO_FLEET_TRUST_PROXY === '1',
    publicUrl: env.VFIO_FLEET_PUBLIC_URL,
    apiQueryTimeoutMs: env.VFIO_FLEET_API_QUERY_TIMEOUT_MS,
    // Relative to where the server was started, like VFIO_FLEET_DATA_DIR.
    downloadsDir:
      env.VFIO_FLEET_DOWNLOADS_DIR === undefined
        ? undefined
        : path.resolve(env.VFIO_FLEET_DOWNLOADS_DIR),
  });
  // This host as the fleet's first member (read-only). Its state dir sits in the data dir
  // (`./.data/local-agent` by default, under PostgreSQL too), resolved like PGlite's own.
  let localAgent: LocalAgent | null = null;
  if (env.VFIO_FLEET_LOCAL_AGENT === '1') {
    const dataDir = process.env.VFIO_FLEET_DATA_DIR || DEFAULT_DATA_DIR;
    localAgent = startLocalAgent({
      serverUrl: localServerUrl(server.url),
      stateDir: path.resolve(
        dataDir.startsWith('memory://') ? DEFAULT_DATA_DIR : dataDir,
        'local-agent',
      ),
      db: handle.db,
      logger,
      root: env.VFIO_FLEET_LOCAL_AGENT_ROOT,
    });
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    // The local agent first: it leaves cleanly instead of redialling a server that is closing.
    Promise.resolve(localAgent?.stop())
      .then(() => server.close())
      .then(() => ui?.close())
      .then(() => handle.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  // `on`, not `once`: a Ctrl-C reaches this process both from the terminal and through
  // scripts/start.mjs, and a repeat must not hit the default handler and kill the shutdown.
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`vfio-fleet server: ${errorMessage(error)}\n`);
  process.exit(1);
});
