// An agent killed in the middle of a job. Its own agent (nic-node-66, an mlx5-vf host whose VF
// probe hangs through the hidden --simulate-faults) takes the rebind, reports its first steps and
// is SIGKILLed; the job page keeps showing the job as running (nobody knows what the host went
// through), and when the agent comes back with the same state dir it reports the run as
// interrupted: the page ends on `failed` with that reason, without a reload.
//
// The server's other way out, expiring a delivered job with `no-answer`/`no-result`, starts only
// 5 minutes after the job's deadline (at least 30 s): too long for this suite.
import { signedIn } from '../src/api-client';
import { MLX5_VF } from '../src/fleet-info';
import { groupBox, jobState } from '../src/host-page';
import { type Child, recordPid, startAgentProcess, waitFor } from '../src/processes';
import { expect, test } from '../src/test';

test('a job whose agent is killed mid-job ends failed (interrupted) in the live job view', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  test.setTimeout(300_000);
  const faulty = fleet.faultyHost;
  const group = fleet.hosts
    .find((h) => h.scenario === 'mlx5-vf')
    ?.devices.find((d) => d.address === MLX5_VF)?.iommuGroup;
  if (group === undefined || group === null) throw new Error(`no IOMMU group for ${MLX5_VF}`);

  const admin = await signedIn(fleet.url, fleet.users.admin.username, fleet.users.admin.password);
  const { token } = await admin.tokens.create.mutate({
    label: 'e2e agent killed mid-job',
    ttlHours: 1,
    maxUses: 1,
  });
  const agentArgs = (extra: string[]) => [
    '--server',
    fleet.url,
    '--simulate',
    faulty.root,
    '--allow-rebind',
    '--interval',
    '1',
    '--state-dir',
    faulty.stateDir,
    '--label',
    'rack=r09',
    '--label',
    'role=nic',
    ...fleet.agentExtraArgs,
    ...extra,
  ];
  const started: Child[] = [];
  const start = (extra: string[]) => {
    const agent = startAgentProcess(agentArgs(extra));
    recordPid(fleet.pidsFile, agent.pid, faulty.stateDir);
    started.push(agent);
    return agent;
  };
  try {
    const first = start(['--token', token, '--simulate-faults', faulty.faultsFile]);
    const hostId = await waitFor(
      `${faulty.hostname} online with its devices`,
      async () => {
        const { items } = await admin.hosts.list.query({ search: faulty.hostname, limit: 10 });
        const row = items.find((h) => h.hostname === faulty.hostname);
        return row !== undefined && row.state === 'online' && row.devices.total > 0
          ? row.id
          : undefined;
      },
      60_000,
      () => first.output(),
    );

    await signIn('operator', `/hosts/${hostId}`);
    await groupBox(page, group).getByRole('button', { name: 'Move group to vfio' }).click();
    const dialog = page.getByRole('dialog', {
      name: `Rebind IOMMU group ${group} on ${faulty.hostname}`,
    });
    await dialog.getByRole('checkbox', { name: /I understand/ }).check();
    await dialog.getByRole('button', { name: 'Queue rebind' }).click();
    await expect(page).toHaveURL(/\/jobs\/[0-9a-f-]{36}$/);
    const jobId = page.url().split('/').at(-1) ?? '';
    await expect(jobState(page)).toHaveText('running', { timeout: 60_000 });

    // The steps before the probe have been reported (the probe is the one that hangs).
    await waitFor(
      'the first forward steps',
      async () => {
        const job = await admin.jobs.get.query({ jobId });
        const steps = job.events.filter((e) => e.message?.includes('forward step'));
        return steps.length >= 2 ? steps : undefined;
      },
      60_000,
      () => first.output(),
    );
    await first.kill();
    // The host goes offline, and the job stays running: it may have changed the host.
    await waitFor(
      `${faulty.hostname} offline`,
      async () => {
        const { items } = await admin.hosts.list.query({ search: faulty.hostname, limit: 10 });
        return items.find((h) => h.id === hostId)?.state === 'offline' ? true : undefined;
      },
      60_000,
    );
    await expect(jobState(page)).toHaveText('running');
    await shot('job-agent-killed');

    // The same agent (its credential and job store), without the fault.
    const second = start([]);
    await expect(jobState(page)).toHaveText('failed', { timeout: 120_000 });
    // The ending up front: why it failed.
    await expect(page.getByRole('alert').filter({ hasText: /^Failed/ })).toContainText(
      'interrupted',
    );
    await shot('job-interrupted');
    const job = await admin.jobs.get.query({ jobId });
    expect(job.state, second.output()).toBe('failed');
    expect(job.reasonCode).toBe('interrupted');
  } finally {
    for (const agent of started) await agent.stop(5_000);
  }
});
