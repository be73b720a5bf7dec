/**
 * Command-line dispatch: picks the subcommand, turns AgentErrors into a message (plus usage for
 * command-line mistakes) and their exit code. Kept apart from main.ts so a test or a daemon can
 * run a command with its own streams.
 */

import { bindCommand } from './commands/bind';
import { captureCommand } from './commands/capture';
import type { Command, CommandContext } from './commands/command';
import { matchCommand } from './commands/match';
import { planCommand } from './commands/plan';
import { restoreCommand } from './commands/restore';
import { runCommand } from './commands/run';
import { scanCommand } from './commands/scan';
import { statusCommand } from './commands/status';
import { AGENT_VERSION } from './daemon/agent-daemon';
import { AgentError, EXIT_CODES, type ExitCode } from './errors';

/** Every command; bind and restore may also exit 4 (rolled back) or 5 (rollback incomplete). */
export const COMMANDS: readonly Command[] = [
  scanCommand,
  matchCommand,
  planCommand,
  bindCommand,
  restoreCommand,
  statusCommand,
  captureCommand,
  runCommand,
];

export function mainUsage(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  const lines = COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`);
  return `Usage: vfio-fleet-agent COMMAND [OPTIONS]

Reads a host's PCI devices, IOMMU groups and vfio state, plans rebinds, and (bind, restore)
executes them with verification and rollback.

Commands:
${lines.join('\n')}

Run \`vfio-fleet-agent COMMAND --help\` for a command's options, \`vfio-fleet-agent --version\`
for the version (the one the server lists for this host).
`;
}

export async function runCli(argv: readonly string[], ctx: CommandContext): Promise<ExitCode> {
  const [name, ...args] = argv;
  try {
    if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
      (name === undefined ? ctx.stderr : ctx.stdout).write(mainUsage());
      return name === undefined ? EXIT_CODES.usage : EXIT_CODES.ok;
    }
    if (name === '--version' || name === '-V') {
      ctx.stdout.write(`vfio-fleet-agent ${AGENT_VERSION}\n`);
      return EXIT_CODES.ok;
    }
    const command = COMMANDS.find((candidate) => candidate.name === name);
    if (command === undefined) {
      throw new AgentError('usage', `unknown command ${JSON.stringify(name)}`, {
        usage: mainUsage(),
      });
    }
    return await command.run(args, ctx);
  } catch (error) {
    if (!(error instanceof AgentError)) throw error;
    ctx.logger.debug({ code: error.code, err: error }, 'command failed');
    const lines = [`vfio-fleet-agent: ${error.message}`, ...error.details.map((d) => `  ${d}`)];
    ctx.stderr.write(`${lines.join('\n')}\n`);
    if (error.usage !== null) ctx.stderr.write(`\n${error.usage}`);
    return error.exitCode;
  }
}
