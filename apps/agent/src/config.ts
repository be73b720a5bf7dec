/**
 * The one place the agent's settings come from: command-line flags over environment variables
 * over defaults. A daemon (next milestone) will add a config file here, not a second loader.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { AgentError } from './errors';
import { LOG_LEVELS } from './logger';

const envSchema = z.object({
  /** Host root to read instead of `/` (a `capture`d tree, a fixture). */
  VFIO_FLEET_ROOT: z.string().min(1).optional(),
  VFIO_FLEET_PCI_IDS: z.string().min(1).optional(),
  VFIO_FLEET_LOG_LEVEL: z.enum(LOG_LEVELS).optional(),
  /**
   * `run`'s enrollment token. The packaged unit reads it from agent.env: in the environment it is
   * readable only by root (/proc/PID/environ), on the command line by every local user.
   * Empty is unset (the template's `VFIO_FLEET_TOKEN=`).
   */
  VFIO_FLEET_TOKEN: z
    .string()
    .optional()
    .transform((v) => (v === '' ? undefined : v)),
});

const configSchema = z.object({
  /** Absolute path every host read goes through. */
  root: z.string().min(1),
  /** Explicit pci.ids on the machine running the agent (not under root); null: search the root. */
  pciIdsPath: z.string().nullable(),
  logLevel: z.enum(LOG_LEVELS),
  /** `run`'s enrollment token and where it came from (named in errors), or null. */
  token: z
    .object({ value: z.string(), source: z.enum(['--token', 'VFIO_FLEET_TOKEN']) })
    .nullable(),
});
export type AgentConfig = z.infer<typeof configSchema>;

export interface ConfigFlags {
  root?: string | undefined;
  pciIds?: string | undefined;
  token?: string | undefined;
}

export async function loadConfig(
  flags: ConfigFlags,
  env: Readonly<Record<string, string | undefined>>,
  cwd: string = process.cwd(),
): Promise<AgentConfig> {
  const parsedEnv = envSchema.safeParse(env);
  if (!parsedEnv.success) {
    const issue = parsedEnv.error.issues[0];
    throw new AgentError(
      'invalid-argument',
      `invalid environment variable ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`,
    );
  }
  const fromEnv = parsedEnv.data;
  const root = path.resolve(cwd, flags.root ?? fromEnv.VFIO_FLEET_ROOT ?? '/');
  const pciIds = flags.pciIds ?? fromEnv.VFIO_FLEET_PCI_IDS;
  const config = configSchema.parse({
    root,
    pciIdsPath: pciIds === undefined ? null : path.resolve(cwd, pciIds),
    // Quiet by default: the CLI reports problems in its output, logs are for debugging.
    logLevel: fromEnv.VFIO_FLEET_LOG_LEVEL ?? 'warn',
    token:
      flags.token !== undefined
        ? { value: flags.token, source: '--token' }
        : fromEnv.VFIO_FLEET_TOKEN !== undefined
          ? { value: fromEnv.VFIO_FLEET_TOKEN, source: 'VFIO_FLEET_TOKEN' }
          : null,
  });
  await assertDirectory(config.root);
  return config;
}

async function assertDirectory(dir: string): Promise<void> {
  const info = await stat(dir).catch(() => null);
  if (info === null || !info.isDirectory()) {
    throw new AgentError('root-not-found', `host root ${dir} is not a directory`);
  }
}
