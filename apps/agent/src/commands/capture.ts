/** `capture`: copy what scan reads into a tree that `scan --root` reads back. */
import path from 'node:path';
import { captureHost } from '../capture/capture-host';
import { loadConfig } from '../config';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { HostFs } from '../host-fs';
import { type Command, type CommandContext, parseCommandArgs } from './command';

export const captureCommand: Command = {
  name: 'capture',
  summary: 'copy the files scan reads into a directory (a fixture, a bug report)',
  usage: `Usage: vfio-fleet-agent capture --out DIR [--root DIR]

Copies the read-only host files the agent reads (see docs/host-files.md) into DIR, keeping
symlinks as symlinks, so that \`vfio-fleet-agent scan --root DIR\` shows the same snapshot.
Write-only sysfs attributes (reset, bind, remove) are never read. DIR must be new or empty.

Options:
  --out DIR    where to write the copy
  --root DIR   host tree to copy from (default /)
  -h, --help   show this help
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, args, {
      out: { type: 'string' },
      root: { type: 'string' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    if (values.out === undefined || positionals.length > 0) {
      const message =
        values.out === undefined
          ? 'capture: --out DIR is required'
          : `capture: unexpected argument ${positionals[0]}`;
      throw new AgentError('usage', message, { usage: this.usage });
    }
    const config = await loadConfig({ root: values.root }, ctx.env, ctx.cwd);
    const out = path.resolve(ctx.cwd, values.out);
    const result = await captureHost(new HostFs(config.root), out);
    ctx.stdout.write(
      `captured ${config.root} into ${out}: ${result.files} files, ${result.links} symlinks, ${result.directories} directories\n`,
    );
    return EXIT_CODES.ok;
  },
};
