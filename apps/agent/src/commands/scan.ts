/** `scan`: read the host and show what can be passed through, and why not. */
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { renderScanReport } from '../render/scan-report';
import { colorEnabled, createStyle } from '../render/style';
import { type Command, type CommandContext, parseCommandArgs, scanFromFlags } from './command';

export const scanCommand: Command = {
  name: 'scan',
  summary: 'list PCI devices by IOMMU group with their vfio readiness',
  usage: `Usage: vfio-fleet-agent scan [--root DIR] [--json] [--pci-ids FILE] [--state-dir DIR]

Reads the host's PCI devices, IOMMU groups, kernel and vfio state (read-only) and shows, per
IOMMU group, the driver each device has, the vfio driver it would get and whether it can be
passed through, followed by a host summary.

Options:
  --root DIR       read the host tree under DIR instead of / (a capture, a fixture)
  --json           print the HostSnapshot as JSON (schema in @vfio-fleet/core)
  --pci-ids FILE   pci.ids for device names (default: the host's own)
  --state-dir DIR  where the agent keeps persisted bindings, for "kept by" (default
                   $VFIO_FLEET_STATE_DIR, else /var/lib/vfio-fleet when --root is /)
  -h, --help       show this help
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, args, {
      root: { type: 'string' },
      json: { type: 'boolean' },
      'pci-ids': { type: 'string' },
      'state-dir': { type: 'string' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    if (positionals.length > 0) {
      throw new AgentError('usage', `scan: unexpected argument ${positionals[0]}`, {
        usage: this.usage,
      });
    }
    const snapshot = await scanFromFlags(values, ctx);
    if (values.json === true) {
      ctx.stdout.write(`${JSON.stringify(snapshot, null, 2)}\n`);
    } else {
      ctx.stdout.write(
        renderScanReport(snapshot, createStyle(colorEnabled(ctx.stdout.isTTY, ctx.env))),
      );
    }
    return EXIT_CODES.ok;
  },
};
