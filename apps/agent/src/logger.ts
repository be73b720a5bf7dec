/**
 * The agent's one logger. It writes to stderr so stdout carries only command output (`scan --json`
 * is piped into scripts). Synchronous destination: a CLI that exits right after logging must not
 * lose the last lines, and no worker-thread transport survives bundling into one file.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export function createLogger(level: LogLevel): Logger {
  return pino({ name: 'vfio-fleet-agent', level }, pino.destination({ dest: 2, sync: true }));
}
