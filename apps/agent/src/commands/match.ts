/** `match`: which vfio driver would these modaliases get? (modprobe's answer, without modprobe.) */
import {
  ParseError,
  parsePciModalias,
  selectVfioDriver,
  type VfioSelection,
} from '@vfio-fleet/core';
import { loadConfig } from '../config';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { HostFs } from '../host-fs';
import { readKernel, readLoadedDrivers } from '../inventory/read-kernel';
import {
  type ModulesAliasFacts,
  readModulesAlias,
  readModulesAliasFile,
} from '../inventory/read-modules-alias';
import { type Command, type CommandContext, parseCommandArgs } from './command';

export const matchCommand: Command = {
  name: 'match',
  summary: 'show the vfio driver a modalias would get',
  usage: `Usage: vfio-fleet-agent match [--modules-alias FILE] [--root DIR] [--json] MODALIAS...

Prints, for each PCI modalias (as in /sys/bus/pci/devices/*/modalias), the vfio module it would
be bound to: a vfio-pci variant driver when a vfio_pci: alias in modules.alias matches, else
vfio_pci. One line per input, in order: MODALIAS<TAB>MODULE.

Options:
  --modules-alias FILE  modules.alias to match against (default: the running kernel's,
                        /lib/modules/$(uname -r)/modules.alias under --root)
  --root DIR            host tree to read the kernel release and loaded drivers from (default /)
  --json                print [{ modalias, selection }] with candidates and explanation
  -h, --help            show this help

Exit status: 0 when every modalias was answered, 2 when any was malformed.
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, args, {
      'modules-alias': { type: 'string' },
      root: { type: 'string' },
      json: { type: 'boolean' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    if (positionals.length === 0) {
      throw new AgentError('usage', 'match: no MODALIAS given', { usage: this.usage });
    }
    const config = await loadConfig({ root: values.root }, ctx.env, ctx.cwd);
    const fs = new HostFs(config.root);
    let aliases: ModulesAliasFacts;
    let loadedDrivers: ReadonlyMap<string, string> | undefined;
    const explicit = values['modules-alias'];
    if (explicit === undefined) {
      // Answer for the running kernel: its modules.alias and the drivers it has loaded.
      const kernel = await readKernel(fs);
      aliases = await readModulesAlias(fs, kernel.release);
      loadedDrivers = await readLoadedDrivers(fs, kernel.modules);
    } else {
      aliases = await readModulesAliasFile(explicit);
    }
    for (const problem of aliases.problems) ctx.stderr.write(`note: ${problem.message}\n`);

    const answers: Array<{ modalias: string; selection: VfioSelection }> = [];
    let malformed = 0;
    for (const modalias of positionals) {
      try {
        parsePciModalias(modalias);
      } catch (error) {
        if (!(error instanceof ParseError)) throw error;
        malformed += 1;
        ctx.stderr.write(`vfio-fleet-agent: match: ${error.message}\n`);
        continue;
      }
      const selection = selectVfioDriver(aliases.index, modalias, loadedDrivers);
      answers.push({ modalias, selection });
      if (values.json !== true) ctx.stdout.write(`${modalias}\t${selection.module}\n`);
    }
    if (values.json === true) ctx.stdout.write(`${JSON.stringify(answers, null, 2)}\n`);
    return malformed > 0 ? EXIT_CODES.usage : EXIT_CODES.ok;
  },
};
