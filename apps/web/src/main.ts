/**
 * The server's entry point: environment, database (migrated on start), HTTP + agent gateway, and
 * a clean shutdown on SIGTERM/SIGINT (agents are told the server is going away and reconnect to
 * another process or to this one when it is back).
 */
import { createDb } from '@vfio-fleet/db';
import { parseServerEnv } from './env';
import { errorMessage } from './errors';
import { createLogger } from './logger';
import { startServer } from './server';

async function main(): Promise<void> {
  const env = parseServerEnv(process.env);
  const logger = createLogger(env.VFIO_FLEET_LOG_LEVEL);
  const handle = await createDb({ env: process.env });
  await handle.migrate();
  logger.info({ driver: handle.driver }, 'database migrated');
  const server = await startServer({
    port: env.PORT,
    host: env.HOST,
    db: handle.db,
    logger,
    heartbeatSeconds: env.VFIO_FLEET_HEARTBEAT_SECONDS,
  });
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server
      .close()
      .then(() => handle.close())
      .then(
        () => process.exit(0),
        (error: unknown) => {
          logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`vfio-fleet server: ${errorMessage(error)}\n`);
  process.exit(1);
});
