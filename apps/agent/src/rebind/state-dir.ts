/**
 * Where the agent keeps job outcomes, locks and persisted bindings: `--state-dir` over
 * `VFIO_FLEET_STATE_DIR` over the FHS place for a daemon's variable state.
 */
import path from 'node:path';

export const DEFAULT_STATE_DIR = '/var/lib/vfio-fleet';

export function resolveStateDir(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
): string {
  const fromEnv = env.VFIO_FLEET_STATE_DIR;
  const chosen = flag ?? (fromEnv === undefined || fromEnv === '' ? DEFAULT_STATE_DIR : fromEnv);
  return path.resolve(cwd, chosen);
}
