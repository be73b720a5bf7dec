/**
 * `bind` and `restore`: a local root operator moving one device's IOMMU group to vfio or back,
 * through the same executor the daemon uses (same lock, same verification, same rollback). They
 * need no --allow-rebind (the operator asked explicitly, on the host), but always print the plan
 * before acting; --dry-run prints it and writes nothing, not even the state directory.
 */
import {
  normalizePciAddress,
  ParseError,
  planRebind,
  type RebindPlan,
  type RebindTarget,
} from '@vfio-fleet/core';
import type { Command, CommandContext } from '../commands/command';
import { parseCommandArgs } from '../commands/command';
import { loadConfig } from '../config';
import { AgentError, EXIT_CODES, type ExitCode } from '../errors';
import { HostFs } from '../host-fs';
import { collectHost } from '../inventory/collect';
import { describeStuckWrite, stuckWrites } from '../kernel/stuck-writes';
import { lockedReaderFor } from '../kernel/sysfs-kernel-io';
import { refusalDetails, renderPlan, stepCommand } from '../render/plan-report';
import { colorEnabled, createStyle, type Style } from '../render/style';
import { forgetBindings } from './bindings-file';
import { type JobOutcome, type JobStepEvent, RebindExecutor } from './executor';
import { exitCodeFor } from './exit-codes';
import { hostDriverExpectations } from './host-drivers';
import { kernelIoFor, parseSimulatedFault } from './kernel-io-for';
import { DEFAULT_STATE_DIR, resolveStateDir } from './state-dir';

/** The options `bind` and `restore` share, for their usage text (both run through runLocalRebind). */
export const REBIND_COMMON_OPTIONS = `  --state-dir DIR  job outcomes, locks, persisted bindings (default ${DEFAULT_STATE_DIR},
                   env VFIO_FLEET_STATE_DIR)
  --root DIR       a fixture or captured tree instead of /; needs --simulate
  --simulate       write through the kernel model on --root's tree, not the real sysfs
  --simulate-fault SPEC
                   with --simulate, inject a kernel fault to watch the rollback (repeatable):
                   write-fails:PATH:ERRNO, bind-refuses:DRIVER, probe-hangs:ADDRESS,
                   modprobe-fails:MODULE
  --pci-ids FILE   pci.ids for device names`;

const OPTIONS = {
  root: { type: 'string' },
  'state-dir': { type: 'string' },
  'pci-ids': { type: 'string' },
  'dry-run': { type: 'boolean' },
  force: { type: 'boolean' },
  persist: { type: 'boolean' },
  simulate: { type: 'boolean' },
  'simulate-fault': { type: 'string', multiple: true },
  json: { type: 'boolean' },
} as const;

export async function runLocalRebind(
  command: Pick<Command, 'name' | 'usage'>,
  target: RebindTarget,
  args: string[],
  ctx: CommandContext,
): Promise<ExitCode> {
  const { values, positionals } = parseCommandArgs(command, args, OPTIONS);
  if (values.help === true) {
    ctx.stdout.write(command.usage);
    return EXIT_CODES.ok;
  }
  const [input, ...extra] = positionals;
  if (input === undefined || extra.length > 0) {
    const message =
      input === undefined
        ? `${command.name}: ADDRESS is required`
        : `${command.name}: unexpected argument ${extra[0]}`;
    throw new AgentError('usage', message, { usage: command.usage });
  }
  if (values.persist === true && target === 'host') {
    throw new AgentError('usage', 'restore: --persist is for bind (restore always forgets)', {
      usage: command.usage,
    });
  }
  const address = parseAddress(command.name, input);
  const config = await loadConfig(
    { root: values.root, pciIds: values['pci-ids'] },
    ctx.env,
    ctx.cwd,
  );
  const simulate = values.simulate === true;
  // Checked before anything is read: a --root without --simulate must fail even on --dry-run,
  // so an operator never learns the difference only when the writes start.
  if (config.root !== '/' && !simulate) {
    throw new AgentError(
      'usage',
      `${command.name}: --root ${config.root} is not the live host: add --simulate to run the kernel model on that tree`,
      { usage: command.usage },
    );
  }
  const faults = (values['simulate-fault'] ?? []).map(parseSimulatedFault);
  if (faults.length > 0 && !simulate) {
    throw new AgentError('usage', `${command.name}: --simulate-fault needs --simulate`, {
      usage: command.usage,
    });
  }
  if (config.root === '/' && simulate) {
    throw new AgentError('usage', `${command.name}: --simulate needs --root DIR (a fixture tree)`, {
      usage: command.usage,
    });
  }

  const fs = new HostFs(config.root);
  const io = await kernelIoFor(config.root, simulate, ctx.logger, faults);
  // Read as `scan` does: a device behind a stuck write must not hang the command.
  const snapshot = await collectHost(fs, {
    pciIdsPath: config.pciIdsPath,
    logger: ctx.logger,
    lockedRead: lockedReaderFor(io),
  });
  const stuck = stuckWrites.forDevice(config.root, address);
  if (stuck !== null) {
    throw new AgentError(
      'plan-refused',
      `${command.name}: nothing written: ${address} is stuck in the kernel, ${describeStuckWrite(stuck)} has not returned`,
    );
  }
  if (!snapshot.devices.some((d) => d.address === address)) {
    throw new AgentError(
      'device-not-found',
      `${command.name}: no PCI device ${address} on this host`,
    );
  }
  const json = values.json === true;
  const style = createStyle(colorEnabled(ctx.stdout.isTTY, ctx.env));
  const stateDir = resolveStateDir(values['state-dir'], ctx.env, ctx.cwd);
  // As the executor will plan it: a restore expects each device's host driver (host-drivers.ts).
  const hostDrivers =
    target === 'host' ? await hostDriverExpectations(fs, stateDir, snapshot) : undefined;
  const result = planRebind(snapshot, address, target, { hostDrivers });

  if (!result.ok) {
    if (target === 'host' && result.refusal.code === 'nothing-to-do') {
      // Giving a device back is idempotent: already on the host is success, and a leftover
      // persisted record would only bind it again at the next agent start.
      const forgotten =
        values['dry-run'] === true
          ? []
          : await forgetBindings(stateDir, [address]).catch((error: unknown) => {
              throw new AgentError(
                'file-unreadable',
                `${command.name}: ${error instanceof Error ? error.message : String(error)}`,
              );
            });
      if (json) {
        ctx.stdout.write(`${JSON.stringify({ plan: null, outcome: null, forgotten }, null, 2)}\n`);
      } else {
        ctx.stdout.write(`${result.refusal.message}: nothing to do.\n`);
        if (forgotten.length > 0) ctx.stdout.write(forgottenLine(forgotten, stateDir));
      }
      return EXIT_CODES.ok;
    }
    throw new AgentError(
      'plan-refused',
      `${command.name} refused (${result.refusal.code}): ${result.refusal.message}`,
      { details: refusalDetails(result.refusal) },
    );
  }
  const plan = result.plan;
  if (!json) ctx.stdout.write(renderPlan(plan, style));

  const needForce = target === 'vfio' ? plan.warnings.filter((r) => r.severity === 'warning') : [];
  if (values['dry-run'] === true) {
    if (json) ctx.stdout.write(`${JSON.stringify({ plan, outcome: null }, null, 2)}\n`);
    else {
      const force =
        needForce.length > 0 && values.force !== true
          ? ` It would be refused without --force (${needForce.map((r) => r.code).join(', ')}).`
          : '';
      ctx.stdout.write(`\nDry run: nothing was written.${force}\n`);
    }
    return EXIT_CODES.ok;
  }

  const executor = new RebindExecutor({
    fs,
    io,
    stateDir,
    // A local root operator asked for this rebind explicitly: --allow-rebind gates server jobs.
    allowRebind: true,
    pciIdsPath: config.pciIdsPath ?? undefined,
    logger: ctx.logger,
  });
  const jobId = `local-${Date.now()}-${process.pid}`;
  if (!json) ctx.stdout.write(`\n${style.bold(`Running (job ${jobId})`)}\n`);
  const outcome = await executor.execute(
    { jobId, address, target, force: values.force === true, persist: values.persist === true },
    json ? undefined : (event) => ctx.stdout.write(stepLine(event, style)),
  );

  const persisted = outcome.persistence?.kept ?? [];
  const forgotten = outcome.persistence?.forgotten ?? [];
  const persistError = outcome.persistence?.error ?? null;

  if (json) {
    ctx.stdout.write(`${JSON.stringify({ plan, outcome, persisted, forgotten }, null, 2)}\n`);
  } else {
    ctx.stdout.write(outcomeText(outcome, plan, style));
    if (persisted.length > 0) {
      ctx.stdout.write(
        `Persisted ${persisted.map((p) => `${p.address} (${p.driver})`).join(', ')} in ${stateDir}/bindings.json: \`vfio-fleet-agent run\` binds them again at start.\n`,
      );
    }
    if (forgotten.length > 0) ctx.stdout.write(forgottenLine(forgotten, stateDir));
    if (target === 'vfio' && outcome.status === 'succeeded' && values.persist !== true) {
      ctx.stdout.write(
        'Not kept across reboots: the group returns to its host drivers at the next boot (bind --persist keeps it).\n',
      );
    }
  }
  if (outcome.status !== 'succeeded') {
    const reason = outcome.reason;
    const lines = [
      `vfio-fleet-agent: ${command.name} ${outcome.status.replace('_', ' ')}: ${reason?.message ?? ''}`,
    ];
    for (const r of reason?.reasons ?? []) {
      lines.push(`  [${r.code}] ${r.message}`);
      if (r.remedy !== null) lines.push(`    remedy: ${r.remedy}`);
    }
    ctx.stderr.write(`${lines.join('\n')}\n`);
  }
  if (persistError !== null) {
    ctx.stderr.write(`vfio-fleet-agent: ${command.name} succeeded, but ${persistError}\n`);
    return EXIT_CODES.failure;
  }
  return exitCodeFor(outcome.status);
}

function stepLine(event: JobStepEvent, style: Style): string {
  const mark =
    event.status === 'ok'
      ? style.green('ok     ')
      : event.status === 'skipped'
        ? style.dim('skipped')
        : style.red('FAILED ');
  const phase = event.phase === 'rollback' ? 'rollback ' : '';
  const what = stepCommand(event.step) ?? event.step.description;
  const error =
    event.error === null ? '' : `\n             ${event.error.errno}: ${event.error.message}`;
  return `  ${mark}  ${phase}${event.index + 1}. ${what}  (${event.durationMs.toFixed(0)} ms)${error}\n`;
}

function outcomeText(outcome: JobOutcome, plan: RebindPlan, style: Style): string {
  const bindings = outcome.after.map((b) => `${b.address} ${b.driver ?? 'unbound'}`).join(', ');
  switch (outcome.status) {
    case 'succeeded': {
      const node =
        plan.target === 'vfio' && plan.iommuGroup !== null
          ? `; /dev/vfio/${plan.iommuGroup} present`
          : '';
      return `\n${style.green('Succeeded')}: ${bindings}${node}\n`;
    }
    case 'rolled_back':
      return `\n${style.yellow('Rolled back')}: every device is as before (${bindings})\n`;
    case 'failed':
      return `\n${style.red('Failed')}: ${outcome.reason?.message ?? ''}\n`;
    case 'refused':
      return `\n${style.yellow('Refused')} (${outcome.reason?.code ?? ''}): nothing was written\n`;
  }
}

function forgottenLine(forgotten: ReadonlyArray<{ address: string }>, stateDir: string): string {
  return `Removed ${forgotten.map((p) => p.address).join(', ')} from ${stateDir}/bindings.json.\n`;
}

function parseAddress(name: string, input: string): string {
  try {
    return normalizePciAddress(input);
  } catch (error) {
    if (error instanceof ParseError)
      throw new AgentError('invalid-argument', `${name}: ${error.message}`);
    throw error;
  }
}
