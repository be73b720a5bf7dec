/**
 * The human form of a rebind plan: numbered steps with the exact shell command each one is, so
 * an operator can review it, or run it by hand where the agent may not write.
 */
import {
  CLEAR_OVERRIDE_VALUE,
  type PlanPrecondition,
  type PlanRefusal,
  type PlanStep,
  type RebindPlan,
} from '@vfio-fleet/core';
import type { Style } from './style';
import { formatTable } from './table';

/** The shell equivalent of a step: what the agent would do, as `echo`/`modprobe`. */
export function stepCommand(step: PlanStep): string | null {
  switch (step.action) {
    case 'modprobe':
      return `modprobe ${step.module}`;
    case 'verify-driver':
      return null;
    case 'clear-override':
    case 'restore-override':
      // Writing a bare newline clears driver_override, which is exactly what plain `echo` writes.
      return step.value === CLEAR_OVERRIDE_VALUE
        ? `echo > ${step.path}`
        : `echo ${step.value} > ${step.path}`;
    default:
      return `echo ${step.value} > ${step.path}`;
  }
}

function renderSteps(steps: readonly PlanStep[]): string[] {
  const lines: string[] = [];
  steps.forEach((step, i) => {
    lines.push(`  ${i + 1}. ${step.description}`);
    const command = stepCommand(step);
    if (command !== null) lines.push(`       $ ${command}`);
  });
  return lines;
}

export function renderPlan(plan: RebindPlan, style: Style): string {
  const lines: string[] = [];
  const group = plan.iommuGroup === null ? 'no IOMMU group' : `IOMMU group ${plan.iommuGroup}`;
  lines.push(
    style.bold(`Plan: ${plan.address} to ${plan.target} (${group}: ${plan.devices.join(', ')})`),
  );
  if (plan.alreadyDone) lines.push('Nothing to do: the group is already where it should be.');
  if (plan.preconditions.length > 0) {
    lines.push('', style.bold('Preconditions'));
    for (const precondition of plan.preconditions) lines.push(`  - ${describe(precondition)}`);
  }
  lines.push('', style.bold('Steps'), ...renderSteps(plan.steps));
  lines.push('', style.bold('Rollback'), ...renderSteps(plan.rollback));
  lines.push('', style.bold('Blast radius'));
  if (plan.blastRadius.length === 0) {
    lines.push('  none: no other device changes driver');
  } else {
    const rows = plan.blastRadius.map((entry) => [
      entry.address,
      entry.driver ?? '-',
      entry.name,
      entry.netInterfaces.length === 0 ? '-' : `net: ${entry.netInterfaces.join(', ')}`,
      entry.reason,
    ]);
    lines.push(...formatTable(rows, '  '));
  }
  if (plan.warnings.length > 0) {
    lines.push('', style.bold('Warnings'));
    for (const warning of plan.warnings) {
      lines.push(`  - [${warning.code}] ${warning.message}`);
      if (warning.remedy !== null) lines.push(`    remedy: ${warning.remedy}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Lines under a refusal message: each reason with its code and remedy. */
export function refusalDetails(refusal: PlanRefusal): string[] {
  return refusal.reasons.flatMap((reason) => [
    `[${reason.code}] ${reason.message}`,
    ...(reason.remedy === null ? [] : [`  remedy: ${reason.remedy}`]),
  ]);
}

function describe(precondition: PlanPrecondition): string {
  const driver = precondition.driver === null ? 'no driver' : `driver ${precondition.driver}`;
  const override =
    precondition.driverOverride === null
      ? 'driver_override unset'
      : `driver_override ${precondition.driverOverride}`;
  return `${precondition.address}: ${driver}, ${override}`;
}
