/**
 * What every subcommand gets and provides: the CLI dispatches on `name`, prints `usage` for
 * `--help` and for command-line mistakes, and maps the returned number to the exit status.
 */
import path from 'node:path';
import { type ParseArgsConfig, parseArgs } from 'node:util';
import type { HostSnapshot } from '@vfio-fleet/core';
import { loadConfig } from '../config';
import { AgentError, type ExitCode } from '../errors';
import { HostFs } from '../host-fs';
import { collectHost } from '../inventory/collect';
import { lockedReaderFor, SysfsKernelIo } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';
import { type PersistedBinding, readPersistedBindings } from '../rebind/bindings-file';
import { resolveStateDir } from '../rebind/state-dir';

export interface OutputStream {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface CommandContext {
  stdout: OutputStream;
  stderr: OutputStream;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  logger: Logger;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(args: string[], ctx: CommandContext): Promise<ExitCode>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * node:util parseArgs with the agent's error handling: an unknown flag or a missing value becomes
 * a usage error that names the command's usage, and `--help` is available to every command.
 */
export function parseCommandArgs<const O extends Options>(
  command: Pick<Command, 'name' | 'usage'>,
  args: string[],
  options: O,
) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new AgentError('usage', `${command.name}: ${message}`, { usage: command.usage });
  }
}

/** Reads the host named by `--root` / `--pci-ids` (and their environment defaults). */
export async function scanFromFlags(
  flags: {
    root?: string | undefined;
    'pci-ids'?: string | undefined;
    'state-dir'?: string | undefined;
  },
  ctx: CommandContext,
): Promise<HostSnapshot> {
  const config = await loadConfig({ root: flags.root, pciIds: flags['pci-ids'] }, ctx.env, ctx.cwd);
  // As the daemon reads: a device whose lock a stuck write holds is reported, not waited on.
  const io = new SysfsKernelIo(config.root);
  try {
    return await collectHost(new HostFs(config.root), {
      pciIdsPath: config.pciIdsPath,
      logger: ctx.logger,
      lockedRead: lockedReaderFor(io),
      persisted: await persistedForScan(flags, config.root, ctx),
    });
  } finally {
    io.close();
  }
}

/**
 * The agent's persisted bindings, for each device's `keptBy`. This machine's state dir describes
 * this machine only: a `--root` capture gets them from an explicit --state-dir or
 * VFIO_FLEET_STATE_DIR. A damaged file is a warning, never a failed scan.
 */
async function persistedForScan(
  flags: { 'state-dir'?: string | undefined },
  root: string,
  ctx: CommandContext,
): Promise<PersistedBinding[]> {
  const explicit = flags['state-dir'] !== undefined || (ctx.env.VFIO_FLEET_STATE_DIR ?? '') !== '';
  if (!explicit && path.resolve(root) !== '/') return [];
  const stateDir = resolveStateDir(flags['state-dir'], ctx.env, ctx.cwd);
  try {
    return await readPersistedBindings(stateDir);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    ctx.stderr.write(`vfio-fleet-agent: warning: persisted bindings not read: ${message}\n`);
    return [];
  }
}
