/**
 * One e2e fleet: a throwaway database (PGlite in a temp dir, or a `vf_e2e_*` database on the
 * PostgreSQL of DATABASE_URL), the real server process on port 0, an admin-made enrollment token,
 * an operator and a viewer, and one real agent per fixture scenario with the kernel model. The
 * numbers the UI must show are computed from each tree's `scan --json` (the agent's own view), not
 * from anything the server says. stop() undoes all of it, whatever state start() reached.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type HostSnapshot, hostSnapshotSchema } from '@vfio-fleet/core';
import { buildHostTree, type ScenarioName, scenario } from '@vfio-fleet/host-fixtures';
import postgres from 'postgres';
import { signedIn, signedInSession } from './api-client';
import { writeFakeDist } from './fake-dist';
import {
  type Counts,
  type DatabaseKind,
  type ExpectedDevice,
  type ExpectedHost,
  type FleetInfo,
  MLX5_VF,
} from './fleet-info';
import {
  type Child,
  repoRoot,
  scanJson,
  spawnChild,
  startAgentProcess,
  waitFor,
} from './processes';

export const ADMIN_PASSWORD = 'e2e-admin-password';
const USERS = {
  admin: { username: 'admin', password: ADMIN_PASSWORD },
  operator: { username: 'operator', password: 'e2e-operator-password' },
  viewer: { username: 'viewer', password: 'e2e-viewer-password' },
};

/** Every scenario once, each with the labels an operator would give it. */
const FLEET: { scenario: ScenarioName; labels: Record<string, string> }[] = [
  { scenario: 'dual-gpu', labels: { rack: 'r01', role: 'gpu' } },
  { scenario: 'mlx5-vf', labels: { rack: 'r01', role: 'nic' } },
  { scenario: 'critical-nvme-nic', labels: { rack: 'r02', role: 'storage' } },
  { scenario: 'iommu-off', labels: { rack: 'r02', role: 'legacy' } },
  { scenario: 'vfio-bound', labels: { rack: 'r03', role: 'vm' } },
];

/** The shared pci.ids (names in the UI, as a real host's agent reads its own), when present. */
function pciIdsArgs(): string[] {
  const testdata = process.env.VFIO_FLEET_TESTDATA ?? path.resolve(repoRoot, '../shared/testdata');
  const file = path.join(testdata, 'pci.ids');
  return existsSync(file) ? ['--pci-ids', file] : [];
}

/** The capacity rule, restated: the bound driver is vfio-pci or a *_vfio_pci variant. */
function onVfio(driver: string | null): boolean {
  return driver !== null && (/^vfio/.test(driver) || /vfio[-_]pci$/.test(driver));
}

function emptyCounts(): Counts {
  return { total: 0, onVfio: 0, 'in-use': 0, bound: 0, ready: 0, blocked: 0 };
}

function add(counts: Counts, device: HostSnapshot['devices'][number]): void {
  counts.total += 1;
  if (onVfio(device.driver)) counts.onVfio += 1;
  counts[device.readiness.status] += 1;
}

/** The fleet numbers the UI must show, from the agents' own snapshots. */
export function expectedNumbers(snapshots: readonly HostSnapshot[]): FleetInfo['expected'] {
  const devices = emptyCounts();
  const types = new Map<string, FleetInfo['expected']['types'][number]>();
  for (const snapshot of snapshots) {
    for (const device of snapshot.devices) {
      add(devices, device);
      const key = `${device.vendorId}:${device.deviceId}`;
      const type = types.get(key) ?? {
        vendorId: device.vendorId,
        deviceId: device.deviceId,
        deviceName: device.names.device,
        ...emptyCounts(),
      };
      add(type, device);
      types.set(key, type);
    }
  }
  return {
    hostsOnline: snapshots.length,
    devices,
    types: [...types.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, t]) => t),
  };
}

function expectedDevices(snapshot: HostSnapshot): ExpectedDevice[] {
  return snapshot.devices.map((d) => ({
    address: d.address,
    vendorId: d.vendorId,
    deviceId: d.deviceId,
    driver: d.driver,
    vfioDriver: d.vfioDriver,
    iommuGroup: d.iommuGroup,
    status: d.readiness.status,
    reasons: d.readiness.reasons.map((r) => ({ code: r.code, message: r.message })),
  }));
}

export interface RunningFleet {
  info: FleetInfo;
  stop(): Promise<void>;
}

/**
 * Stops the processes listed in `file` that tests started and left running (a test that failed
 * half-way, a worker that died): SIGTERM, so a demo can stop its own children, then SIGKILL. A pid
 * is only signalled while its command line still holds the marker recorded with it, so a pid the
 * system has since given to another process is left alone.
 */
async function stopListed(file: string): Promise<void> {
  if (!existsSync(file)) return;
  const ours = (pid: number, marker: string) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').includes(marker);
    } catch {
      return false; // gone
    }
  };
  const listed = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => {
      const [pid = '', marker = ''] = line.split('\t');
      return { pid: Number(pid), marker };
    })
    .filter((p) => Number.isInteger(p.pid) && p.pid > 0 && p.marker !== '');
  const signal = (sig: NodeJS.Signals) => {
    for (const p of listed) {
      if (!ours(p.pid, p.marker)) continue;
      try {
        process.kill(p.pid, sig);
      } catch {
        // Exited in between.
      }
    }
  };
  signal('SIGTERM');
  const end = Date.now() + 15_000;
  while (Date.now() < end && listed.some((p) => ours(p.pid, p.marker))) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  signal('SIGKILL');
}

export async function startFleet(kind: DatabaseKind, baseDir: string): Promise<RunningFleet> {
  const dir = path.join(baseDir, kind);
  await mkdir(dir, { recursive: true });
  const pidsFile = path.join(dir, 'pids');
  await writeFile(pidsFile, '');
  const children: Child[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const stop = async () => {
    await stopListed(pidsFile);
    // Agents first, so they do not redial a server that is going away; then the server.
    await Promise.all(children.slice(1).map((c) => c.stop(5_000)));
    await children[0]?.stop(15_000);
    for (const cleanup of cleanups.reverse()) {
      await cleanup().catch((error: unknown) => {
        process.stderr.write(`e2e teardown (${kind}): ${String(error)}\n`);
      });
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    // --- the database -------------------------------------------------------------------------
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: '0',
      HOST: '127.0.0.1',
      ADMIN_PASSWORD,
      VFIO_FLEET_LOCAL_AGENT: '0',
      VFIO_FLEET_HEARTBEAT_SECONDS: '2',
      VFIO_FLEET_LOG_LEVEL: 'info',
      NO_COLOR: '1',
      // The agent it hands out (/downloads, /install.sh, the enrollment page's install commands).
      VFIO_FLEET_DOWNLOADS_DIR: path.join(dir, 'dist'),
    };
    await writeFakeDist(path.join(dir, 'dist'));
    if (kind === 'pglite') {
      delete env.DATABASE_URL;
      env.VFIO_FLEET_DATA_DIR = path.join(dir, 'pglite');
    } else {
      const maintenanceUrl = process.env.DATABASE_URL;
      if (maintenanceUrl === undefined || maintenanceUrl === '') {
        throw new Error('the postgres project needs DATABASE_URL');
      }
      const name = `vf_e2e_${randomBytes(6).toString('hex')}`;
      const admin = postgres(maintenanceUrl, { max: 1, onnotice: () => {} });
      await admin.unsafe(`CREATE DATABASE "${name}"`);
      cleanups.push(async () => {
        // WITH (FORCE): a connection the server left open must not keep the database alive.
        await admin.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
        await admin.end({ timeout: 5 });
      });
      const url = new URL(maintenanceUrl);
      url.pathname = `/${name}`;
      env.DATABASE_URL = url.toString();
    }

    // --- the server ---------------------------------------------------------------------------
    const server = spawnChild(process.execPath, ['--import', 'tsx', 'apps/web/src/main.ts'], {
      cwd: repoRoot,
      env,
    });
    children.push(server);
    const url = await waitFor(
      `the ${kind} server to listen`,
      () => {
        if (server.child.exitCode !== null) {
          throw new Error(`the server exited with ${server.child.exitCode}`);
        }
        const match = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*"msg":"server listening"/.exec(
          server.output(),
        );
        return match?.[1];
      },
      180_000,
      () => server.output().slice(-4_000),
    );
    if (server.output().includes('serving no UI')) {
      throw new Error(
        'the server has no Next.js build to serve: run `npm run build --workspace @vfio-fleet/web` (turbo does it before e2e tests)',
      );
    }

    // --- users and an enrollment token, through the API as admin ------------------------------
    const adminApi = await signedIn(url, USERS.admin.username, USERS.admin.password);
    await adminApi.users.create.mutate({ ...USERS.operator, role: 'operator' });
    await adminApi.users.create.mutate({ ...USERS.viewer, role: 'viewer' });
    const { token } = await adminApi.tokens.create.mutate({
      label: 'e2e fleet',
      ttlHours: 2,
      maxUses: FLEET.length,
    });

    // --- the agents, each on its own fixture tree ---------------------------------------------
    const extra = pciIdsArgs();
    const snapshots: {
      scenario: ScenarioName;
      labels: Record<string, string>;
      snap: HostSnapshot;
    }[] = [];
    for (const member of FLEET) {
      const root = path.join(dir, 'hosts', member.scenario);
      await buildHostTree(root, scenario(member.scenario));
      // The expected view, before the agent (and its kernel model) touches the tree.
      const snap = hostSnapshotSchema.parse(scanJson(root, extra));
      snapshots.push({ scenario: member.scenario, labels: member.labels, snap });
      const agent = startAgentProcess([
        '--server',
        url,
        '--token',
        token,
        '--simulate',
        root,
        '--allow-rebind',
        '--interval',
        '1',
        '--state-dir',
        path.join(dir, 'state', member.scenario),
        ...Object.entries(member.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
        ...extra,
      ]);
      children.push(agent);
    }
    const expected = expectedNumbers(snapshots.map((s) => s.snap));

    // Every host online with its whole inventory stored (the API is only asked when that is so).
    let seen = 'nothing yet';
    const listed = await waitFor(
      `${FLEET.length} hosts online with ${expected.devices.total} devices`,
      async () => {
        const summary = await adminApi.fleet.summary.query();
        seen = `${summary.hosts.online} hosts online, ${summary.devices.total} devices`;
        if (summary.hosts.online !== FLEET.length) return undefined;
        if (summary.devices.total !== expected.devices.total) return undefined;
        return adminApi.hosts.list.query({ limit: 200 });
      },
      180_000,
      () =>
        [`last seen: ${seen}`, ...children.map((c) => c.output().slice(-1_500))].join('\n---\n'),
    );
    const hosts: ExpectedHost[] = snapshots.map(({ scenario: name, labels, snap }) => {
      const row = listed.items.find((h) => h.hostname === snap.host.hostname);
      if (row === undefined) throw new Error(`host ${snap.host.hostname} is not in hosts.list`);
      return {
        scenario: name,
        hostname: snap.host.hostname,
        hostId: row.id,
        labels,
        devices: expectedDevices(snap),
      };
    });

    // --- the tree the kill test runs its own agent on ------------------------------------------
    const faultyRoot = path.join(dir, 'hosts', 'faulty');
    const faultySpec = {
      ...scenario('mlx5-vf'),
      hostname: 'nic-node-66',
      machineId: 'e2e0'.repeat(8),
    };
    await buildHostTree(faultyRoot, faultySpec);
    const faultsFile = path.join(dir, 'faults.json');
    await writeFile(
      faultsFile,
      JSON.stringify({ faults: [{ kind: 'probe-hangs', address: MLX5_VF }] }),
    );

    const sessionOf = async (role: keyof typeof USERS): Promise<string> => {
      const session = await signedInSession(url, USERS[role].username, USERS[role].password);
      const cookie = session.cookie();
      if (cookie === null) throw new Error(`auth.login as ${role} set no session cookie`);
      return cookie;
    };
    const sessions = {
      admin: await sessionOf('admin'),
      operator: await sessionOf('operator'),
      viewer: await sessionOf('viewer'),
    };

    const info: FleetInfo = {
      project: kind,
      url,
      users: USERS,
      sessions,
      hosts,
      expected,
      faultyHost: {
        hostname: faultySpec.hostname,
        root: faultyRoot,
        stateDir: path.join(dir, 'state', 'faulty'),
        faultsFile,
        address: MLX5_VF,
      },
      agentExtraArgs: extra,
      pidsFile,
    };
    return { info, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
