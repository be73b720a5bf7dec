/** `status`: which mechanism keeps each vfio binding across reboots, and where they contradict. */

import { loadConfig } from '../config';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { HostFs } from '../host-fs';
import { collectHost } from '../inventory/collect';
import { lockedReaderFor, SysfsKernelIo } from '../kernel/sysfs-kernel-io';
import { readPersistedBindings } from '../rebind/bindings-file';
import { analyzeOwnership, type OwnershipClaim } from '../rebind/ownership';
import { DEFAULT_STATE_DIR, resolveStateDir } from '../rebind/state-dir';
import { colorEnabled, createStyle } from '../render/style';
import { formatTable } from '../render/table';
import { type Command, type CommandContext, parseCommandArgs } from './command';

export const statusCommand: Command = {
  name: 'status',
  summary: 'show who keeps each vfio binding across reboots, and contradictions',
  usage: `Usage: vfio-fleet-agent status [--root DIR] [--state-dir DIR] [--json] [--pci-ids FILE]

For every device on a vfio driver or with a vfio driver_override (or that something would put
there), which mechanisms bind it: the agent's persisted bindings (STATE_DIR/bindings.json),
driverctl (/etc/driverctl.d/pci-ADDR), vfio-pci.ids= on the kernel command line, and
\`options vfio-pci ids=\` in /etc/modprobe.d/*.conf. Flags contradictions: mechanisms that
disagree, a binding not in effect, a device on vfio that nothing persists (lost at reboot).
Reads only.

Options:
  --root DIR       read the host tree under DIR instead of /
  --state-dir DIR  where bindings.json is (default ${DEFAULT_STATE_DIR}, env VFIO_FLEET_STATE_DIR)
  --json           print { devices, problems } as JSON
  --pci-ids FILE   pci.ids for device names
  -h, --help       show this help

Exit status: 0 (also with contradictions: they are in the output), 2 bad arguments.
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, args, {
      root: { type: 'string' },
      'state-dir': { type: 'string' },
      json: { type: 'boolean' },
      'pci-ids': { type: 'string' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    if (positionals.length > 0) {
      throw new AgentError('usage', `status: unexpected argument ${positionals[0]}`, {
        usage: this.usage,
      });
    }
    const config = await loadConfig(
      { root: values.root, pciIds: values['pci-ids'] },
      ctx.env,
      ctx.cwd,
    );
    const fs = new HostFs(config.root);
    // Read as `scan` does: a device behind a stuck write must not hang the command.
    const io = new SysfsKernelIo(config.root);
    const snapshot = await collectHost(fs, {
      pciIdsPath: config.pciIdsPath,
      logger: ctx.logger,
      lockedRead: lockedReaderFor(io),
    }).finally(() => io.close());
    const stateDir = resolveStateDir(values['state-dir'], ctx.env, ctx.cwd);
    const persisted = await readPersistedBindings(stateDir).catch((error: unknown) => {
      throw new AgentError('file-unreadable', `status: ${errorText(error)}`, { cause: error });
    });
    const report = await analyzeOwnership(fs, snapshot, persisted);

    if (values.json === true) {
      ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      return EXIT_CODES.ok;
    }
    const style = createStyle(colorEnabled(ctx.stdout.isTTY, ctx.env));
    const lines: string[] = [];
    if (report.devices.length === 0) {
      lines.push('No device is on a vfio driver, has a vfio driver_override or is set up for one.');
    } else {
      const rows = report.devices.map((d) => [
        d.address,
        `${d.vendorId}:${d.deviceId}`,
        d.driver ?? '-',
        d.driverOverride ?? '-',
        d.claims.length === 0
          ? style.yellow('nothing (lost at reboot)')
          : d.claims.map(claimText).join(', '),
      ]);
      lines.push(
        ...formatTable([['ADDRESS', 'ID', 'DRIVER', 'OVERRIDE', 'KEPT BY'], ...rows], '  '),
      );
    }
    lines.push('');
    if (report.problems.length === 0) {
      lines.push('No contradictions.');
    } else {
      lines.push(style.bold(`Contradictions (${report.problems.length})`));
      for (const p of report.problems) lines.push(`  - [${p.code}] ${p.message}`);
    }
    ctx.stdout.write(`${lines.join('\n')}\n`);
    return EXIT_CODES.ok;
  },
};

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function claimText(claim: OwnershipClaim): string {
  switch (claim.mechanism) {
    case 'persisted':
      return `agent (${claim.driver})`;
    case 'driverctl':
      return `driverctl (${claim.driver})`;
    case 'cmdline':
      return 'vfio-pci.ids (cmdline)';
    case 'modprobe.d':
      return `vfio-pci ids (${claim.source})`;
  }
}
