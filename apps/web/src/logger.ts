/**
 * The server's one logger (pino, JSON lines on stdout). Tests pass `level: 'silent'` or their own.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(level: pino.LevelWithSilent = 'info'): Logger {
  return pino({ name: 'vfio-fleet-web', level });
}
