/**
 * The human form of a rebind plan: numbered steps with the exact shell command each one is, so
 * an operator can review it, or run it by hand where the agent may not write.
 */
import type { planRebind } from '@vfio-fleet/core';
import type { Style } from './style';
import { formatTable } from './table';

type PlanResult = ReturnType<typeof planRebind>;
export type RebindPlan = Extract<PlanResult, { ok: true }>['plan'];
export type PlanRefusal = Extract<PlanResult, { ok: false }>['refusal'];
type PlanStep = RebindPlan['steps'][number];

/** The shell equivalent of a step: what the agent would do, as `echo`/`modprobe`. */
export function stepCommand(step: PlanStep): string | null {
  if (step.module !== undefined && step.module !== null) return `modprobe ${step.module}`;
  if (step.path !== undefined && step.path !== null) {
    const value = step.value ?? '';
    return value === '' ? `echo > ${step.path}` : `echo ${value} > ${step.path}`;
  }
  return null;
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

function describe(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null) {
    for (const key of ['description', 'message'] as const) {
      if (key in value) {
        const text: unknown = (value as Record<string, unknown>)[key];
        if (typeof text === 'string') return text;
      }
    }
  }
  return JSON.stringify(value);
}
