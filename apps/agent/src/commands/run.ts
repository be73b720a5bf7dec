/** `run`: the long-running agent that streams this host to the server and executes its jobs. */
import path from 'node:path';
import { helloMessageSchema } from '@vfio-fleet/core';
import { loadConfig } from '../config';
import { AgentDaemon } from '../daemon/agent-daemon';
import { parentLockInfo, watchParentPipe } from '../daemon/parent-watch';
import { agentEndpointUrl, parseLabels } from '../daemon/server-url';
import { readFaultsFile, type SimulatedKernelOptions } from '../daemon/simulate';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { DEFAULT_STATE_DIR, resolveStateDir } from '../rebind/state-dir';
import { type Command, type CommandContext, parseCommandArgs } from './command';

const DEFAULT_INTERVAL_SECONDS = 10;

export const runCommand: Command = {
  name: 'run',
  summary: 'run the agent: stream this host to a vfio-fleet server and execute its rebind jobs',
  usage: `Usage: vfio-fleet-agent run --server URL [--token TOKEN] [--state-dir DIR] [--root DIR]
                        [--allow-rebind] [--interval SECONDS] [--label KEY=VALUE]... [--simulate [FIXTURE_DIR]]

Connects to the server's agent endpoint (wss:// for an https:// URL), enrolls once with TOKEN,
keeps the credential it gets in the state dir (mode 0600), and from then on reports this host's
devices every interval (only what changed) and runs the rebind jobs the server sends. Without
--allow-rebind it is read-only and refuses every job. Stops cleanly on SIGTERM or SIGINT.

Options:
  --server URL         the vfio-fleet server, e.g. https://fleet.example.com
  --token TOKEN        one-time enrollment token (needed only until a credential is stored);
                       prefer $VFIO_FLEET_TOKEN, which other users cannot read in ps
  --state-dir DIR      credential, job results, persisted bindings (default
                       $VFIO_FLEET_STATE_DIR, else ${DEFAULT_STATE_DIR})
  --root DIR           read the host tree under DIR instead of /
  --allow-rebind       let jobs from the server rebind devices (default: refuse them all)
  --interval SECONDS   how often to re-read the host (default ${DEFAULT_INTERVAL_SECONDS})
  --label KEY=VALUE    a label the server can select this host by (repeatable)
  --simulate [DIR]     drive a model of the kernel over a fixture tree (DIR, or --root), not real sysfs
  --pci-ids FILE       pci.ids for device names (default: the host's own)
  -h, --help           show this help

Exit status: 0 stopped by a signal, 2 command-line mistake, 3 the server ended the session with
a fatal error (revoked credential, used-up token, unsupported protocol), 1 anything else.
`,
  async run(args: string[], ctx: CommandContext): Promise<ExitCode> {
    const { values, positionals } = parseCommandArgs(this, simulateDirAsRoot(args), {
      server: { type: 'string' },
      token: { type: 'string' },
      'state-dir': { type: 'string' },
      root: { type: 'string' },
      'allow-rebind': { type: 'boolean' },
      interval: { type: 'string' },
      label: { type: 'string', multiple: true },
      simulate: { type: 'boolean' },
      // Hidden (tests, demos): kernel-model faults, so a rollback can be shown end to end.
      'simulate-faults': { type: 'string' },
      // Hidden (the server's local agent): stop when this inherited pipe closes.
      'parent-fd': { type: 'string' },
      'pci-ids': { type: 'string' },
    });
    if (values.help === true) {
      ctx.stdout.write(this.usage);
      return EXIT_CODES.ok;
    }
    const usage = (message: string): AgentError =>
      new AgentError('usage', `run: ${message}`, { usage: this.usage });
    if (positionals.length > 0) throw usage(`unexpected argument ${positionals[0]}`);
    if (values.server === undefined) throw usage('--server URL is required');

    let endpoint: URL;
    let labels: Record<string, string>;
    try {
      endpoint = agentEndpointUrl(values.server);
      labels = parseLabels(values.label ?? []);
    } catch (error) {
      throw usage(error instanceof Error ? error.message : String(error));
    }
    // The protocol's own rules, checked here so a typo is a usage error, not a server refusal.
    const labelsSchema = helloMessageSchema.shape.labels;
    for (const [key, value] of Object.entries(labels)) {
      if (!labelsSchema.safeParse({ [key]: value }).success) {
        throw usage(
          `--label ${key}=${value}: keys are at most 63 letters, digits, _ . / - starting with a letter or digit (not an Object member name); values at most 256 characters`,
        );
      }
    }
    const labelCheck = labelsSchema.safeParse(labels);
    if (!labelCheck.success) throw usage(`--label: ${labelCheck.error.issues[0]?.message}`);
    const intervalSeconds =
      values.interval === undefined ? DEFAULT_INTERVAL_SECONDS : Number(values.interval);
    if (!Number.isFinite(intervalSeconds) || intervalSeconds < 1 || intervalSeconds > 3600) {
      throw usage(`--interval must be a number of seconds from 1 to 3600, not ${values.interval}`);
    }
    if (values['simulate-faults'] !== undefined && values.simulate !== true) {
      throw usage('--simulate-faults needs --simulate');
    }
    const parentFd = values['parent-fd'] === undefined ? null : Number(values['parent-fd']);
    if (parentFd !== null && !(Number.isInteger(parentFd) && parentFd >= 3)) {
      throw usage(
        `--parent-fd must be an inherited file descriptor (3 or more), not ${values['parent-fd']}`,
      );
    }

    const config = await loadConfig(
      { root: values.root, pciIds: values['pci-ids'], token: values.token },
      ctx.env,
      ctx.cwd,
    );
    const token = config.token?.value ?? null;
    if (config.token !== null) {
      const tokenCheck = helloMessageSchema.shape.auth.safeParse({
        kind: 'enroll',
        token: config.token.value,
      });
      if (!tokenCheck.success) {
        throw usage(`${config.token.source}: ${tokenCheck.error.issues[0]?.message ?? 'invalid'}`);
      }
    }
    if (values.simulate === true && config.root === '/') {
      // The model rewrites the tree it runs on as the kernel would show it: never the live /sys.
      throw usage('--simulate needs --root DIR (a fixture tree)');
    }
    if (values['allow-rebind'] === true && values.simulate !== true && config.root !== '/') {
      // As with bind/restore: a tree that is not the live host is rebound only through the model.
      throw usage(
        `--root ${config.root} is not the live host: add --simulate to rebind on that tree through the kernel model`,
      );
    }
    let simulate: SimulatedKernelOptions | null = null;
    if (values.simulate === true) {
      const faultsFile = values['simulate-faults'];
      try {
        simulate =
          faultsFile === undefined
            ? { faults: [] }
            : await readFaultsFile(path.resolve(ctx.cwd, faultsFile));
      } catch (error) {
        throw new AgentError(
          'invalid-argument',
          `run: --simulate-faults: ${error instanceof Error ? error.message : String(error)}`,
        );
      }
    }
    // A daemon's logs are its output: info by default, unless the operator chose a level.
    const logger =
      ctx.env.VFIO_FLEET_LOG_LEVEL === undefined
        ? ctx.logger.child({ command: 'run' }, { level: 'info' })
        : ctx.logger.child({ command: 'run' });

    const daemon = new AgentDaemon({
      endpoint,
      token,
      stateDir: resolveStateDir(values['state-dir'], ctx.env, ctx.cwd),
      root: config.root,
      pciIdsPath: config.pciIdsPath,
      allowRebind: values['allow-rebind'] === true,
      intervalMs: intervalSeconds * 1000,
      labels,
      simulate,
      logger,
      lockInfo: parentFd === null ? {} : parentLockInfo(),
    });

    let signalled: (signal: NodeJS.Signals) => void = () => undefined;
    const signal = new Promise<NodeJS.Signals>((resolve) => {
      signalled = resolve;
    });
    let stopping = false;
    const onSignal = (name: NodeJS.Signals): void => {
      if (stopping) {
        // A second signal: the operator wants out now, whatever is in flight.
        logger.warn({ signal: name }, 'second signal: exiting without waiting');
        process.exit(EXIT_CODES.failure);
      }
      stopping = true;
      signalled(name);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // The parent gone is a SIGTERM it can no longer send (an orphan would keep this host's
    // connection from the next server's own local agent).
    const parentPid = process.ppid;
    const unwatch =
      parentFd === null
        ? () => undefined
        : watchParentPipe(parentFd, () => {
            logger.warn({ parentPid }, 'the process that started this agent is gone: stopping');
            onSignal('SIGTERM');
          });
    try {
      await daemon.start();
      const ended = await Promise.race([
        signal.then((name) => ({ kind: 'signal' as const, name })),
        daemon.halted.then((halt) => ({ kind: 'halt' as const, halt })),
      ]);
      if (ended.kind === 'halt') {
        ctx.stderr.write(
          `vfio-fleet-agent: the server refused this agent (${ended.halt.code}): ${ended.halt.message}\n`,
        );
        return EXIT_CODES.refused;
      }
      logger.info({ signal: ended.name }, 'signal received');
      await daemon.stop();
      return EXIT_CODES.ok;
    } finally {
      unwatch();
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
  },
};

/**
 * `--simulate FIXTURE_DIR` is the short form of `--root FIXTURE_DIR --simulate` (run takes no
 * positional arguments, so a bare word after --simulate can only be its directory).
 */
export function simulateDirAsRoot(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] ?? '';
    const next = args[i + 1];
    if (arg.startsWith('--simulate=')) {
      out.push('--root', arg.slice('--simulate='.length), '--simulate');
    } else if (arg === '--simulate' && next !== undefined && !next.startsWith('-')) {
      out.push('--root', next, '--simulate');
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}
