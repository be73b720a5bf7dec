/** `plan`: what rebinding a device's IOMMU group would do, without doing it. */
import { normalizePciAddress, ParseError, planRebind } from '@vfio-fleet/core';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { refusalDetails, renderPlan } from '../render/plan-report';
import { colorEnabled, createStyle } from '../render/style';
import { type Command, type CommandContext, parseCommandArgs, scanFromFlags } from './command';

const TARGETS = ['vfio', 'host'] as const;
type Target = (typeof TARGETS)[number];

export const planCommand: Command = {
  name: 'plan',
  summary: 'show the steps to move a device (and its IOMMU group) to vfio or back',
  usage: `Usage: vfio-fleet-agent plan ADDRESS --to vfio|host [--root DIR] [--json] [--pci-ids FILE]

Scans the host and prints the plan to bind ADDRESS's whole IOMMU group to its vfio driver
(--to vfio) or back to its host drivers (--to host): numbered steps with the exact commands,
the rollback, the devices affected (blast radius) and warnings. Writes nothing.

Options:
  --to vfio|host   where the device should go (required)
  --root DIR       read the host tree under DIR instead of /
  --json           print the plan as JSON
  --pci-ids FILE   pci.ids for device names (default: the host's own)
  -h, --help       show this help

Exit status: 0 with a plan, 2 for a bad or unknown address, 3 when the rebind is refused.
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, args, {
      to: { type: 'string' },
      root: { type: 'string' },
      json: { type: 'boolean' },
      'pci-ids': { type: 'string' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    const [input, ...extra] = positionals;
    if (input === undefined || extra.length > 0) {
      const message =
        input === undefined ? 'plan: ADDRESS is required' : `plan: unexpected argument ${extra[0]}`;
      throw new AgentError('usage', message, { usage: this.usage });
    }
    const target = TARGETS.find((t) => t === values.to);
    if (target === undefined) {
      const message =
        values.to === undefined
          ? 'plan: --to vfio|host is required'
          : 'plan: --to must be vfio or host';
      throw new AgentError('usage', message, { usage: this.usage });
    }
    const address = parseAddress(input);

    const snapshot = await scanFromFlags(values, ctx);
    if (!snapshot.devices.some((device) => device.address === address)) {
      throw new AgentError('device-not-found', `plan: no PCI device ${address} on this host`);
    }
    const result = planRebind(snapshot, address, target satisfies Target);
    if (!result.ok) {
      throw new AgentError(
        'plan-refused',
        `plan refused (${result.refusal.code}): ${result.refusal.message}`,
        {
          details: refusalDetails(result.refusal),
        },
      );
    }
    if (values.json === true) {
      ctx.stdout.write(`${JSON.stringify(result.plan, null, 2)}\n`);
    } else {
      ctx.stdout.write(
        renderPlan(result.plan, createStyle(colorEnabled(ctx.stdout.isTTY, ctx.env))),
      );
    }
    return EXIT_CODES.ok;
  },
};

function parseAddress(input: string): string {
  try {
    return normalizePciAddress(input);
  } catch (error) {
    if (error instanceof ParseError)
      throw new AgentError('invalid-argument', `plan: ${error.message}`);
    throw error;
  }
}
