/**
 * The process wiring of the CLI: the real streams and environment, the log level from
 * VFIO_FLEET_LOG_LEVEL, and exit status. Errors that are not AgentErrors are bugs: they get a
 * stack on stderr and exit 1. Shared by the bundle's entry (main.ts) and the single executable's
 * (packaging/src/sea-main.ts), which cannot use top-level await.
 */
import { runCli } from './cli';
import { EXIT_CODES } from './errors';
import { runWriterChild } from './kernel/writer-child';
import { WRITER_SUBCOMMAND } from './kernel/writer-protocol';
import { createLogger, LOG_LEVELS, type LogLevel } from './logger';

function logLevelFromEnv(value: string | undefined): LogLevel {
  return LOG_LEVELS.find((level) => level === value) ?? 'warn';
}

export async function runProcess(): Promise<void> {
  // The agent re-run as its own sysfs writer (kernel/writer-pool.ts): the same executable, so
  // it works from the bundle and from the single executable alike.
  if (process.argv[2] === WRITER_SUBCOMMAND) {
    await runWriterChild(process.stdin, process.stdout);
    return;
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
}
