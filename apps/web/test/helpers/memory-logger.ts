// A pino logger whose lines a test can read back: what the server logged, and how often.
import pino from 'pino';
import type { Logger } from '../../src/logger';

export interface MemoryLogger {
  logger: Logger;
  /** Each line parsed: pino's fields (`msg`, `level`, …) and the logged object's. */
  lines(): Record<string, unknown>[];
}

export function memoryLogger(level: pino.LevelWithSilent = 'debug'): MemoryLogger {
  const raw: string[] = [];
  const logger = pino({ level }, { write: (line: string) => raw.push(line) });
  return {
    logger,
    lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}
