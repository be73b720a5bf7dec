/**
 * Process entry point (bundled by build.mjs): wires the real streams and environment into the
 * CLI. Errors that are not AgentErrors are bugs: they get a stack on stderr and exit 1.
 */
import { runCli } from './cli';
import { EXIT_CODES } from './errors';
import { createLogger, LOG_LEVELS, type LogLevel } from './logger';

function logLevelFromEnv(value: string | undefined): LogLevel {
  return LOG_LEVELS.find((level) => level === value) ?? 'warn';
}

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
