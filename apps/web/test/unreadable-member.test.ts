// A device whose sysfs files are garbage (issue 16 item 8), end to end: a real agent on a fixture
// tree with the GPU's audio function damaged reports to the real server, and the host page shows
// the GPU blocked with group-member-unreadable, naming the damaged function; the server refuses to
// plan a rebind of the group. An agent of the previous version (no problems[].device) gets the
// same verdict: the server finds the member from the group listing.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type HostSnapshot, hostSnapshotSchema } from '@vfio-fleet/core';
import { hosts } from '@vfio-fleet/db';
import { buildScenario, corruptDevice } from '@vfio-fleet/host-fixtures';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getHostView } from '../src/fleet/host-view';
import { createEnrollmentToken } from '../src/gateway/credentials';
import { ingestSnapshot } from '../src/gateway/ingest';
import { previewJob } from '../src/jobs/job-service';
import {
  type AgentProcess,
  drivers,
  type Fleet,
  poll,
  scanJson,
  startAgent,
  startFleet,
} from './helpers/harness';
import { snapshotMessage } from './helpers/inventory';

const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';

let tmp: string;
let root: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-unreadable-'));
  root = path.join(tmp, 'host');
  await buildScenario(root, 'dual-gpu');
  await corruptDevice(root, AUDIO);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** The GPU's verdict and the refusal to move its group, as the host page and a preview give them. */
async function verdict(fleet: Fleet, hostId: string) {
  const view = await getHostView(fleet.db, hostId);
  const group = view.groups.find((g) => g.group === 21);
  const gpu = group?.devices.find((d) => d.address === GPU);
  const preview = await previewJob(fleet.db, { hostId, address: GPU, target: 'vfio' });
  return { group, gpu, preview };
}

describe.each(drivers)('a group with an unreadable member (%s)', (driver) => {
  let fleet: Fleet;
  let agent: AgentProcess | undefined;
  beforeAll(async () => {
    fleet = await startFleet(driver, { heartbeatSeconds: 1, offlineAfterSeconds: 5 });
  });
  afterAll(async () => {
    await agent?.kill();
    await fleet?.close();
  });

  it('is blocked on the host page and refused for a rebind, from a real agent', async () => {
    const { token } = await createEnrollmentToken(fleet.db, { ttlSeconds: 60, maxUses: 1 });
    agent = startAgent([
      ...['--server', fleet.url, '--token', token, '--simulate', root],
      ...['--interval', '1', '--state-dir', path.join(tmp, driver, 'state')],
    ]);
    const hostId = await poll(async () => {
      const [row] = await fleet.db.select({ id: hosts.id, host: hosts.host }).from(hosts);
      return row?.host === null || row === undefined ? undefined : row.id;
    }, 60_000);
    if (hostId === undefined) throw new Error(`the agent did not report:\n${agent.stderr()}`);
    const { group, gpu, preview } = await verdict(fleet, hostId);
    expect(group?.devices.map((d) => d.address)).toEqual([GPU]);
    expect(gpu?.status).toBe('blocked');
    expect(gpu?.firstReason).toBe('group-member-unreadable');
    expect(gpu?.reasons[0]?.message).toContain(`${AUDIO} on snd_hda_intel (vendor reads "zzz"`);
    expect(preview.refusal?.code).toBe('group-unreadable');
    expect(preview.refusal?.message ?? '').toContain(`IOMMU group 21 of ${GPU} is not planned`);
  }, 90_000);

  it('is blocked too when an agent of the previous version reports it only by leaving it out', async () => {
    const scanned = hostSnapshotSchema.parse(scanJson(root));
    // What the previous agent sent: no problems[].device, its own wording, its own (fail-open) verdict.
    const old: HostSnapshot = {
      ...scanned,
      problems: scanned.problems.map(({ device, ...rest }) =>
        device === undefined
          ? rest
          : { ...rest, message: `skipped ${device.address}: vendor, device or class unreadable` },
      ),
      devices: scanned.devices.map((d) =>
        d.address === GPU ? { ...d, readiness: { status: 'ready', reasons: [] } } : d,
      ),
    };
    const [row] = await fleet.db
      .insert(hosts)
      .values({ agentId: 'previous-agent', hostname: 'previous' })
      .returning({ id: hosts.id });
    if (row === undefined) throw new Error('no host row');
    await ingestSnapshot(fleet.db, row.id, snapshotMessage(old, 1), {});
    const { gpu, preview } = await verdict(fleet, row.id);
    expect(gpu?.status).toBe('blocked');
    expect(gpu?.reasons[0]?.message).toContain(
      `${AUDIO} (skipped ${AUDIO}: vendor, device or class unreadable)`,
    );
    expect(preview.refusal?.code).toBe('group-unreadable');
  });
});
