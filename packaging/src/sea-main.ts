/**
 * Entry point of the single executable: apps/agent/src/main.ts without its top-level await.
 * Node 20 runs a single-executable application's main script as CommonJS, and esbuild cannot
 * emit top-level await in CommonJS, so the same wiring sits in an async function here. Keep it in
 * step with main.ts (the tests run both and compare their `scan --json`).
 */
import { runCli } from '../../apps/agent/src/cli';
import { EXIT_CODES } from '../../apps/agent/src/errors';
import { createLogger, LOG_LEVELS, type LogLevel } from '../../apps/agent/src/logger';

function logLevelFromEnv(value: string | undefined): LogLevel {
  return LOG_LEVELS.find((level) => level === value) ?? 'warn';
}

async function main(): Promise<void> {
  const logger = createLogger(logLevelFromEnv(process.env.VFIO_FLEET_LOG_LEVEL));
  try {
    process.exitCode = await runCli(process.argv.slice(2), {
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      cwd: process.cwd(),
      logger,
    });
  } catch (error) {
    logger.error({ err: error }, 'unexpected failure');
    process.stderr.write(
      `vfio-fleet-agent: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exitCode = EXIT_CODES.failure;
  }
}

void main();
