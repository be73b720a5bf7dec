/** `bind`: move a device's whole IOMMU group to its vfio driver, verified, with rollback. */
import { REBIND_COMMON_OPTIONS, runLocalRebind } from '../rebind/local-rebind';
import type { Command } from './command';

export const bindCommand: Command = {
  name: 'bind',
  summary: "move a device's IOMMU group to its vfio driver (verified, rolled back on failure)",
  usage: `Usage: vfio-fleet-agent bind ADDRESS [--root DIR --simulate] [--state-dir DIR] [--dry-run] [--force] [--persist] [--json]

Moves ADDRESS's whole IOMMU group to its vfio driver: prints the plan, then runs it step by
step, verifying each bind; on any failure or timeout it runs the rollback and checks that every
device is back on its previous driver and driver_override. Needs root on a live host; no
--allow-rebind (that gates jobs from a server).

Options:
  --dry-run        print the plan and write nothing
  --force          go ahead despite warning-severity reasons (SR-IOV VFs enabled, no reset...);
                   never despite blocking ones (host-critical devices)
  --persist        record the binding in STATE_DIR/bindings.json: \`vfio-fleet-agent run\` binds
                   it again at start (a sysfs rebind does not survive a reboot)
${REBIND_COMMON_OPTIONS}
  --json           print { plan, outcome, persisted } as JSON
  -h, --help       show this help

Exit status: 0 bound (or already bound), 2 bad arguments, 3 refused (nothing written),
4 a step failed and everything was rolled back, 5 failed and the rollback was incomplete.
`,
  run(args, ctx) {
    return runLocalRebind(this, 'vfio', args, ctx);
  },
};
