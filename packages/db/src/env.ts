/**
 * The one validated environment of @vfio-fleet/db. Read through parseDbEnv(env) rather than at
 * import time, so tests and the server can pass their own env object.
 */
import { z } from 'zod';

const emptyToUndefined = (value: unknown) => (value === '' ? undefined : value);

export const dbEnvSchema = z.object({
  /** postgres://user:pass@host:port/db — set: PostgreSQL through postgres.js; unset: embedded PGlite. */
  DATABASE_URL: z.preprocess(
    emptyToUndefined,
    z
      .string()
      .refine(
        (url) => /^postgres(ql)?:\/\//.test(url),
        'DATABASE_URL must start with postgres:// or postgresql://',
      )
      .optional(),
  ),
  /** PGlite's data directory (default ./.data); `memory://` keeps everything in memory. */
  VFIO_FLEET_DATA_DIR: z.preprocess(emptyToUndefined, z.string().optional()),
});
export type DbEnv = z.infer<typeof dbEnvSchema>;

export function parseDbEnv(env: Record<string, string | undefined> = process.env): DbEnv {
  const parsed = dbEnvSchema.safeParse({
    DATABASE_URL: env.DATABASE_URL,
    VFIO_FLEET_DATA_DIR: env.VFIO_FLEET_DATA_DIR,
  });
  if (!parsed.success) {
    throw new Error(`invalid database environment: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}
