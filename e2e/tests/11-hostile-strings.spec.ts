// A compromised host reports markup and formulas in every free-text field the protocol allows
// (hostname, labels, kernel release, pci.ids names, a critical device's detail, problems, a job's
// step output and reason). Every page that shows them renders them as text: no element the text
// describes exists, no handler runs (window.__xss stays unset), and the capacity CSV defuses each
// formula. Runs last: it leaves its host (offline) in the fleet, as 10 does.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type HostSnapshot, hostSnapshotSchema, type JobMessage } from '@vfio-fleet/core';
import { buildHostTree, scenario } from '@vfio-fleet/host-fixtures';
import { signedIn } from '../src/api-client';
import { parseCsv } from '../src/csv';
import { MLX5_VF } from '../src/fleet-info';
import { startHostileAgent } from '../src/hostile-agent';
import { expectInert } from '../src/inert';
import { scanJson, waitFor } from '../src/processes';
import { expect, test } from '../src/test';

const HOSTNAME = 'xss-host"><img src=x onerror=window.__xss=1><script>window.__xss=2</script>';
const LABEL = '"><svg onload=window.__xss=3>';
const LINK_LABEL = 'javascript:window.__xss=4';
const KERNEL = '6.12<img src=x onerror=window.__xss=5>';
const DETAIL = '" autofocus onfocus="window.__xss=6';
const PROBLEM = '</li><img src=x onerror=window.__xss=7>';
const STEP_OUTPUT = '<img src=x onerror=window.__xss=8> from the hostile agent';
const REASON = '<script>window.__xss=9</script>rolled back by the hostile agent';
/** What spreadsheets read as a formula (or strip before one), one per device type. */
const LEADS = ['=', '+', '-', '@', '\t', '\r'];

/** A real scan of the mlx5-vf fixture with hostile text in every free-text field. */
function hostile(snapshot: HostSnapshot): HostSnapshot {
  const types = [...new Set(snapshot.devices.map((d) => `${d.vendorId}:${d.deviceId}`))];
  return {
    ...snapshot,
    host: {
      ...snapshot.host,
      hostname: HOSTNAME,
      kernelRelease: KERNEL,
      critical: snapshot.host.critical.map((c) => ({ ...c, detail: DETAIL })),
    },
    problems: [{ source: PROBLEM, message: PROBLEM }],
    devices: snapshot.devices.map((d) => {
      const lead = LEADS[types.indexOf(`${d.vendorId}:${d.deviceId}`) % LEADS.length] ?? '=';
      return {
        ...d,
        names: {
          vendor: `${lead}HYPERLINK("http://evil.example")<img src=x onerror=window.__xss=10>`,
          device: `${lead}cmd|' /C calc'!A0 <svg onload=window.__xss=11>`,
          subsystem: `<img src=x onerror=window.__xss=12>`,
          className: `${lead}SUM(1+1)"><script>window.__xss=13</script>`,
        },
      };
    }),
  };
}

test('strings a hostile agent reports render as text and never run', async ({
  page,
  fleet,
  signIn,
  shot,
}) => {
  test.setTimeout(240_000);
  const dir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-e2e-hostile-'));
  const admin = await signedIn(fleet.url, fleet.users.admin.username, fleet.users.admin.password);
  const { token } = await admin.tokens.create.mutate({
    label: 'e2e hostile agent',
    ttlHours: 1,
    maxUses: 1,
  });
  const root = path.join(dir, 'host');
  await buildHostTree(root, scenario('mlx5-vf'));
  const snapshot = hostile(hostSnapshotSchema.parse(scanJson(root, fleet.agentExtraArgs)));
  const answerJob = (job: JobMessage, step: unknown): unknown[] => {
    const at = new Date().toISOString();
    const failedStep = { phase: 'forward', index: 0, step };
    const kernelError = { errno: 'EIO', message: STEP_OUTPUT };
    return [
      { type: 'job-accepted', jobId: job.jobId },
      {
        type: 'job-step',
        jobId: job.jobId,
        ...failedStep,
        status: 'failed',
        startedAt: at,
        durationMs: 1,
        error: kernelError,
      },
      {
        type: 'job-result',
        jobId: job.jobId,
        status: 'rolled_back',
        reason: { code: 'step-failed', message: REASON, reasons: [] },
        failedStep,
        kernelError,
        before: [],
        after: [],
        startedAt: at,
        finishedAt: at,
      },
    ];
  };
  let firstStep: unknown = null;
  const agent = await startHostileAgent({
    url: fleet.url,
    token,
    // It answers jobs, so it says it runs them: a read-only host gets none queued.
    hello: {
      hostname: HOSTNAME,
      kernelRelease: KERNEL,
      labels: { note: LABEL, link: LINK_LABEL },
      allowRebind: true,
    },
    snapshot,
    onJob: (job) => answerJob(job, firstStep),
  });
  try {
    const { items } = await admin.hosts.list.query({ search: 'xss-host', limit: 10 });
    const hostId = items.find((h) => h.hostname === HOSTNAME)?.id;
    if (hostId === undefined) throw new Error('the hostile host is not listed');

    // A job on it, answered with hostile step output.
    const operator = await signedIn(
      fleet.url,
      fleet.users.operator.username,
      fleet.users.operator.password,
    );
    const request = { hostId, address: MLX5_VF, target: 'vfio' as const };
    const preview = await operator.jobs.preview.query(request);
    if (!preview.ok || preview.plan === null)
      throw new Error(`no plan: ${JSON.stringify(preview)}`);
    firstStep = preview.plan.steps[0];
    const { id: jobId } = await operator.jobs.create.mutate({
      ...request,
      acknowledge: true,
      previewHash: preview.previewHash,
    });
    await waitFor(
      'the hostile job to end',
      async () => {
        const job = await operator.jobs.get.query({ jobId });
        return job.state === 'queued' || job.state === 'running' ? undefined : job;
      },
      60_000,
    );

    await signIn('admin', '/hosts');
    await expect(page.getByRole('link', { name: HOSTNAME, exact: true })).toBeVisible();
    await expect(page.getByText(`note=${LABEL}`, { exact: true }).first()).toBeVisible();
    await expectInert(page);

    await page.goto(`${fleet.url}/`);
    const attention = page.getByRole('region', { name: 'Hosts needing attention' });
    await expect(attention.getByRole('link', { name: HOSTNAME, exact: true })).toBeVisible();
    await expectInert(page);

    await page.goto(`${fleet.url}/hosts/${hostId}`);
    await expect(page.getByRole('heading', { name: HOSTNAME, level: 1 })).toBeVisible();
    await expect(page.getByText(PROBLEM).first()).toBeVisible();
    await expect(page.getByText(`link=${LINK_LABEL}`).first()).toBeVisible();
    await expect(page.getByText(KERNEL).first()).toBeVisible();
    await expectInert(page);
    await shot('hostile-host');

    await page.goto(`${fleet.url}/devices?host=xss-host`);
    const devices = page.getByRole('table', { name: /^Devices, page 1/ });
    await expect(devices.getByRole('row')).toHaveCount(snapshot.devices.length + 1);
    await expect(devices.getByText(/cmd\|' \/C calc'!A0 <svg/).first()).toBeVisible();
    await expectInert(page);

    await page.goto(`${fleet.url}/capacity?host=xss-host`);
    const capacity = page.getByRole('table', { name: 'Capacity by device type' });
    await expect(capacity.getByRole('rowheader').first()).toContainText('<svg onload');
    await expectInert(page);
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download CSV' }).click(),
    ]);
    const [header, ...rows] = parseCsv(await readFile(await download.path(), 'utf8'));
    const names = ['vendor', 'device', 'class'].map((c) => header?.indexOf(c) ?? -1);
    expect(rows.length).toBeGreaterThan(0);
    for (const row of rows) {
      for (const i of names) expect(row[i], JSON.stringify(row)).toMatch(/^'[=+\-@\t\r]/);
    }

    await page.goto(`${fleet.url}/jobs/${jobId}`);
    await expect(page.getByText(STEP_OUTPUT).first()).toBeVisible();
    await expect(page.getByText(REASON).first()).toBeVisible();
    await expectInert(page);
    await shot('hostile-job');

    await page.goto(`${fleet.url}/jobs`);
    await expect(page.getByRole('link', { name: HOSTNAME, exact: true }).first()).toBeVisible();
    await expectInert(page);

    await page.goto(`${fleet.url}/admin/tokens`);
    await expect(page.getByRole('link', { name: HOSTNAME, exact: true }).first()).toBeVisible();
    await expectInert(page);

    await page.goto(`${fleet.url}/admin/audit`);
    await expect(page.getByRole('link', { name: HOSTNAME, exact: true }).first()).toBeVisible();
    await expectInert(page);
  } finally {
    agent.close();
    await rm(dir, { recursive: true, force: true });
  }
});
