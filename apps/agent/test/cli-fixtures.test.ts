// plan and capture as child processes on generated host trees, where a rebind is possible.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { HostSnapshot } from '@vfio-fleet/core';
import { buildScenario } from '@vfio-fleet/host-fixtures';
import { readModulesAlias } from '@vfio-fleet/testdata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from './helpers/run-agent';

let tmp: string;
let dualGpu: string;
let critical: string;

function scanJson(root: string): HostSnapshot {
  const run = runAgent(['scan', '--json', '--root', root]);
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as HostSnapshot;
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-cli-fixtures-'));
  const modulesAlias = readModulesAlias('6.12.117+deb12-amd64+vfio-variants');
  dualGpu = path.join(tmp, 'dual-gpu');
  critical = path.join(tmp, 'critical-nvme-nic');
  await buildScenario(dualGpu, 'dual-gpu', { modulesAlias });
  await buildScenario(critical, 'critical-nvme-nic', { modulesAlias });
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('vfio-fleet-agent plan (fixtures)', () => {
  it('prints numbered steps with exact commands, the rollback and the blast radius', () => {
    const snapshot = scanJson(dualGpu);
    const gpu = snapshot.devices.find(
      (d) => d.classCode.startsWith('0300') && d.readiness.status === 'ready',
    );
    expect(gpu, 'a ready GPU in dual-gpu').toBeDefined();
    const run = runAgent(['plan', gpu?.address ?? '', '--to', 'vfio', '--root', dualGpu]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain(`Plan: ${gpu?.address} to vfio`);
    expect(run.stdout).toMatch(/^ {2}1\. /m);
    expect(run.stdout).toMatch(/\$ echo \S+ > \/sys\/bus\/pci\/\S+/);
    expect(run.stdout).toContain('Rollback');
    expect(run.stdout).toContain('Blast radius');

    const json = runAgent([
      'plan',
      gpu?.address ?? '',
      '--to',
      'vfio',
      '--root',
      dualGpu,
      '--json',
    ]);
    expect(json.status, json.stderr).toBe(0);
    const plan = JSON.parse(json.stdout);
    expect(plan.address).toBe(gpu?.address);
    expect(plan.steps.length).toBeGreaterThan(0);
  });

  it('refuses a host-critical device with exit 3 and the reason codes on stderr', () => {
    const snapshot = scanJson(critical);
    const [first] = snapshot.host.critical;
    expect(first).toBeDefined();
    const run = runAgent(['plan', first?.address ?? '', '--to', 'vfio', '--root', critical]);
    expect(run.status).toBe(3);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('host-critical');
  });
});

describe('vfio-fleet-agent capture (fixtures)', () => {
  it.each(['dual-gpu', 'critical-nvme-nic'])(
    '%s: scan of the capture equals scan of the source',
    (name) => {
      const source = path.join(tmp, name);
      const out = path.join(tmp, `${name}-capture`);
      const run = runAgent(['capture', '--root', source, '--out', out]);
      expect(run.status, run.stderr).toBe(0);
      const original = scanJson(source);
      const copy = scanJson(out);
      expect({ ...copy, collectedAt: null }).toEqual({ ...original, collectedAt: null });
    },
  );
});
