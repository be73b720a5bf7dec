/**
 * The server's one validated environment. Read through parseServerEnv(env) rather than at import
 * time, so tests and main.ts pass their own env object. The database variables (DATABASE_URL,
 * VFIO_FLEET_DATA_DIR) are validated by @vfio-fleet/db's createDb, which reads the same env.
 */
import { z } from 'zod';
import { publicUrlSchema } from './api/public-url';
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
  /** The first admin's password on an empty database; unset: a one-time one is printed. */
  ADMIN_PASSWORD: z.preprocess(
    emptyToUndefined,
    z.string().min(12, 'ADMIN_PASSWORD needs at least 12 characters').max(1024).optional(),
  ),
  /** How long a login lasts. */
  SESSION_TTL_HOURS: z.preprocess(
    emptyToUndefined,
    z.coerce
      .number()
      .positive()
      .max(24 * 90)
      .default(12),
  ),
  /** `0` serves no UI (API, agents, health and metrics only), e.g. without a Next.js build. */
  VFIO_FLEET_UI: z.preprocess(emptyToUndefined, z.enum(['0', '1']).default('1')),
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`. */
  METRICS_TOKEN: z.preprocess(
    emptyToUndefined,
    z.string().min(16, 'METRICS_TOKEN needs at least 16 characters').max(1024).optional(),
  ),
  /**
   * `1`: a reverse proxy in front sets X-Forwarded-For (client addresses for rate limits), and
   * X-Forwarded-Host / X-Forwarded-Proto (this server's URL in install commands).
   */
  VFIO_FLEET_TRUST_PROXY: z.preprocess(emptyToUndefined, z.enum(['0', '1']).default('0')),
  /** This server's URL for agents (install.sh, enrollment commands); unset: from the request. */
  VFIO_FLEET_PUBLIC_URL: z.preprocess(emptyToUndefined, publicUrlSchema.optional()),
  /** `0`: no read-only agent for this host next to the server. */
  VFIO_FLEET_LOCAL_AGENT: z.preprocess(emptyToUndefined, z.enum(['0', '1']).default('1')),
  /** The local agent reads this tree instead of / (`--root`; a fixture tree in tests, demos). */
  VFIO_FLEET_LOCAL_AGENT_ROOT: z.preprocess(emptyToUndefined, z.string().min(1).optional()),
  /**
   * Where the packaged agent is served from (/downloads, /install.sh): manifest.json and the files
   * it lists, as `npm run build -w packaging` writes them; default this checkout's packaging/dist.
   */
  VFIO_FLEET_DOWNLOADS_DIR: z.preprocess(emptyToUndefined, z.string().min(1).optional()),
  /**
   * How long an API call may wait for the database before it fails with 503 (PostgreSQL: also
   * the API connections' statement_timeout).
   */
  VFIO_FLEET_API_QUERY_TIMEOUT_MS: z.preprocess(
    emptyToUndefined,
    z.coerce.number().int().min(100).max(600_000).default(10_000),
  ),
});
export type ServerEnv = z.infer<typeof serverEnvSchema>;

export function parseServerEnv(env: Record<string, string | undefined> = process.env): ServerEnv {
  const parsed = serverEnvSchema.safeParse({
    PORT: env.PORT,
    HOST: env.HOST,
    VFIO_FLEET_LOG_LEVEL: env.VFIO_FLEET_LOG_LEVEL,
    VFIO_FLEET_HEARTBEAT_SECONDS: env.VFIO_FLEET_HEARTBEAT_SECONDS,
    ADMIN_PASSWORD: env.ADMIN_PASSWORD,
    SESSION_TTL_HOURS: env.SESSION_TTL_HOURS,
    VFIO_FLEET_UI: env.VFIO_FLEET_UI,
    METRICS_TOKEN: env.METRICS_TOKEN,
    VFIO_FLEET_TRUST_PROXY: env.VFIO_FLEET_TRUST_PROXY,
    VFIO_FLEET_PUBLIC_URL: env.VFIO_FLEET_PUBLIC_URL,
    VFIO_FLEET_LOCAL_AGENT: env.VFIO_FLEET_LOCAL_AGENT,
    VFIO_FLEET_LOCAL_AGENT_ROOT: env.VFIO_FLEET_LOCAL_AGENT_ROOT,
    VFIO_FLEET_DOWNLOADS_DIR: env.VFIO_FLEET_DOWNLOADS_DIR,
    VFIO_FLEET_API_QUERY_TIMEOUT_MS: env.VFIO_FLEET_API_QUERY_TIMEOUT_MS,
  });
  if (!parsed.success) {
    throw new ServerError('bad-config', `invalid environment: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}
