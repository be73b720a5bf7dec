/** `restore`: give a device's IOMMU group back to its host drivers, verified, with rollback. */
import { REBIND_COMMON_OPTIONS, runLocalRebind } from '../rebind/local-rebind';
import type { Command } from './command';

export const restoreCommand: Command = {
  name: 'restore',
  summary:
    "give a device's IOMMU group back to its host drivers (verified, rolled back on failure)",
  usage: `Usage: vfio-fleet-agent restore ADDRESS [--root DIR --simulate] [--state-dir DIR] [--dry-run] [--json]

Moves ADDRESS's IOMMU group off vfio: clears vfio driver_overrides and lets the kernel probe
each device so its host driver claims it; prints the plan first, verifies every step and rolls
back on failure. Removes the group's records from STATE_DIR/bindings.json, so the agent does not
bind them again at its next start. A group already on the host is success (exit 0).

Options:
  --dry-run        print the plan and write nothing
  --force          accepted for symmetry with bind (giving a device back never needs it)
${REBIND_COMMON_OPTIONS}
  --json           print { plan, outcome, forgotten } as JSON
  -h, --help       show this help

Exit status: 0 restored (or nothing to do), 2 bad arguments, 3 refused (nothing written),
4 a step failed and everything was rolled back, 5 failed and the rollback was incomplete.
`,
  run(args, ctx) {
    return runLocalRebind(this, 'host', args, ctx);
  },
};
