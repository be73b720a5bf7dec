/**
 * The server's one validated environment. Read through parseServerEnv(env) rather than at import
 * time, so tests and main.ts pass their own env object. The database variables (DATABASE_URL,
 * VFIO_FLEET_DATA_DIR) are validated by @vfio-fleet/db's createDb, which reads the same env.
 */
import { z } from 'zod';
import { ServerError } from './errors';

const emptyToUndefined = (value: unknown) => (value === '' ? undefined : value);

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export const serverEnvSchema = z.object({
  PORT: z.preprocess(emptyToUndefined, z.coerce.number().int().min(0).max(65_535).default(3000)),
  /** Interface to listen on; all of them by default, as a fleet server is reached over the network. */
  HOST: z.preprocess(emptyToUndefined, z.string().min(1).default('0.0.0.0')),
  VFIO_FLEET_LOG_LEVEL: z.preprocess(emptyToUndefined, z.enum(LOG_LEVELS).default('info')),
  /** How often agents ping (sent to them in `welcome`); a host is offline after 3 missed. */
  VFIO_FLEET_HEARTBEAT_SECONDS: z.preprocess(
    emptyToUndefined,
    z.coerce.number().int().min(1).max(3600).default(30),
  ),
});
export type ServerEnv = z.infer<typeof serverEnvSchema>;

export function parseServerEnv(env: Record<string, string | undefined> = process.env): ServerEnv {
  const parsed = serverEnvSchema.safeParse({
    PORT: env.PORT,
    HOST: env.HOST,
    VFIO_FLEET_LOG_LEVEL: env.VFIO_FLEET_LOG_LEVEL,
    VFIO_FLEET_HEARTBEAT_SECONDS: env.VFIO_FLEET_HEARTBEAT_SECONDS,
  });
  if (!parsed.success) {
    throw new ServerError('bad-config', `invalid environment: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}
