// Devices a VM holds, as the agent reads them through --root: `enable` says whether, /proc says
// who. The vm-running scenario has libvirt's QEMU holding a GPU group and a DPDK process holding
// a NIC port through an anonymous device fd only.
import { mkdir, mkdtemp, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Device, type HostSnapshot, hostSnapshotSchema } from '@vfio-fleet/core';
import {
  buildHostTree,
  buildScenario,
  type HostSpec,
  scenario,
  VM_RUNNING_QEMU_PID,
  VM_RUNNING_VM_NAME,
} from '@vfio-fleet/host-fixtures';
import { afterAll, describe, expect, it } from 'vitest';
import { HostFs } from '../src/host-fs';
import { collectHost } from '../src/inventory/collect';
import { HolderCache } from '../src/inventory/read-holders';
import { renderScanReport } from '../src/render/scan-report';
import { createStyle } from '../src/render/style';
import { runAgent } from './helpers/run-agent';

const roots: string[] = [];
const GPU = '0000:17:00.0';
const AUDIO = '0000:17:00.1';
const NIC_HELD = '0000:65:00.1';
const NIC_FREE = '0000:65:00.0';
const QEMU = { pid: VM_RUNNING_QEMU_PID, command: 'qemu-system-x86', vm: VM_RUNNING_VM_NAME };

async function tempRoot(label: string): Promise<string> {
  const root = await mkdtemp(path.join(tmpdir(), `agent-inuse-${label}-`));
  roots.push(root);
  return root;
}

async function vmRunning(label: string): Promise<string> {
  const root = await tempRoot(label);
  await buildScenario(root, 'vm-running');
  return root;
}

function device(snapshot: HostSnapshot, address: string): Device {
  const found = snapshot.devices.find((d) => d.address === address);
  if (found === undefined) throw new Error(`${address} not in the scan`);
  return found;
}

afterAll(async () => {
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

describe('scan of a host with VMs running', () => {
  it('scan --json: held devices are in-use with their holder; free ones are not', async () => {
    const root = await vmRunning('json');
    const cli = runAgent(['scan', '--json', '--root', root]);
    expect(cli.status, cli.stderr).toBe(0);
    const snapshot = hostSnapshotSchema.parse(JSON.parse(cli.stdout));
    for (const address of [GPU, AUDIO]) {
      expect(device(snapshot, address)).toMatchObject({
        inUse: true,
        holder: QEMU,
        readiness: { status: 'in-use' },
      });
    }
    // A device fd kept without its group names no device in /proc: held, by nobody we can name.
    expect(device(snapshot, NIC_HELD)).toMatchObject({
      inUse: true,
      holder: null,
      readiness: { status: 'in-use' },
    });
    expect(device(snapshot, NIC_FREE)).toMatchObject({ inUse: false, holder: null });
    // A host driver enables its device too: only vfio devices are ever in use.
    for (const d of snapshot.devices.filter((d) => ![GPU, AUDIO, NIC_HELD].includes(d.address))) {
      expect(d, d.address).toMatchObject({ inUse: false, holder: null });
    }
    // The raw JSON carries the contract fields even where they are defaults.
    const raw = JSON.parse(cli.stdout) as { devices: Array<Record<string, unknown>> };
    for (const d of raw.devices)
      expect(Object.keys(d)).toEqual(expect.arrayContaining(['inUse', 'holder']));
  });

  it('the table names the VM of each held device and the summary counts them', async () => {
    const root = await vmRunning('table');
    const snapshot = await collectHost(new HostFs(root));
    const report = renderScanReport(snapshot, createStyle(false));
    const gpuLine = report.split('\n').find((line) => line.trim().startsWith(GPU));
    expect(gpuLine).toContain('in-use');
    expect(gpuLine).toContain(`VM "${VM_RUNNING_VM_NAME}"`);
    const nicLine = report.split('\n').find((line) => line.trim().startsWith(NIC_HELD));
    expect(nicLine).toContain('an unknown process');
    expect(report).toMatch(/Devices\s+\d+: 3 in use by a VM or process, 0 bound to vfio/);
    expect(report).toContain(
      `In use               VM "${VM_RUNNING_VM_NAME}" (pid ${VM_RUNNING_QEMU_PID}, "qemu-system-x86"): ${GPU}, ${AUDIO}; an unknown process: ${NIC_HELD}`,
    );
  });

  it('a bound device nobody holds stays bound, even when a process has its group open', async () => {
    const root = await tempRoot('group-only');
    const base = scenario('vm-running');
    const spec: HostSpec = {
      ...base,
      // QEMU between opening the group and taking the device fd: the device is not enabled yet.
      processes: [
        { pid: 99, comm: 'qemu-system-x86', cmdline: ['qemu-system-x86_64'], fds: [{ group: 21 }] },
      ],
    };
    await buildHostTree(root, spec);
    const snapshot = await collectHost(new HostFs(root));
    expect(device(snapshot, GPU)).toMatchObject({
      inUse: false,
      holder: null,
      readiness: { status: 'bound' },
    });
  });
});

describe('holders that /proc cannot name', () => {
  it('a holder whose fd directory vanished mid-scan: in use, holder unknown', async () => {
    const root = await vmRunning('vanished');
    await rm(path.join(root, `proc/${VM_RUNNING_QEMU_PID}`), { recursive: true });
    const snapshot = await collectHost(new HostFs(root));
    expect(device(snapshot, GPU)).toMatchObject({
      inUse: true,
      holder: null,
      readiness: { status: 'in-use' },
    });
  });

  it('unreadable comm and cmdline: the command falls back, then the holder is unknown', async () => {
    const root = await vmRunning('unreadable');
    const proc = path.join(root, `proc/${VM_RUNNING_QEMU_PID}`);
    await unlink(path.join(proc, 'comm'));
    let snapshot = await collectHost(new HostFs(root));
    // Without comm, argv[0]'s basename names the command; the VM name still comes from argv.
    expect(device(snapshot, GPU).holder).toEqual({ ...QEMU, command: 'qemu-system-x86_64' });
    // A cmdline that cannot be read (a link loop reads ELOOP) leaves nothing to name it by.
    await unlink(path.join(proc, 'cmdline'));
    await symlink('cmdline', path.join(proc, 'cmdline'));
    snapshot = await collectHost(new HostFs(root));
    expect(device(snapshot, GPU)).toMatchObject({ inUse: true, holder: null });
  });

  it('no process in /proc (another pid namespace): in use from enable, and a problem says why', async () => {
    const root = await vmRunning('pidns');
    for (const pid of [1, 1834, VM_RUNNING_QEMU_PID, 7311]) {
      await rm(path.join(root, `proc/${pid}`), { recursive: true });
    }
    const snapshot = await collectHost(new HostFs(root));
    expect(device(snapshot, GPU)).toMatchObject({ inUse: true, holder: null });
    expect(snapshot.problems.map((p) => p.message).join('\n')).toContain('another pid namespace');
  });

  it('nothing held: /proc is not read at all', async () => {
    const root = await tempRoot('idle');
    await buildScenario(root, 'vfio-bound');
    const read: string[] = [];
    class Spy extends HostFs {
      override async listDir(p: string): Promise<string[]> {
        read.push(p);
        return super.listDir(p);
      }
    }
    const snapshot = await collectHost(new Spy(root));
    expect(device(snapshot, GPU)).toMatchObject({ inUse: false, readiness: { status: 'bound' } });
    expect(read.filter((p) => p.startsWith('/proc'))).toEqual([]);
  });
});

describe('the vfio device cdev (6.6+ kernels with iommufd)', () => {
  it('a process holding /dev/vfio/devices/vfioN holds the device that vfio-dev/vfioN names', async () => {
    const root = await tempRoot('cdev');
    const base = scenario('vm-running');
    const spec: HostSpec = {
      ...base,
      vfioDeviceCdev: true,
      processes: [
        {
          pid: 5150,
          comm: 'cloud-hyperviso',
          cmdline: ['/usr/bin/cloud-hypervisor', '--api-socket', '/run/ch.sock'],
          fds: [{ cdev: AUDIO }],
        },
        {
          pid: 5151,
          comm: 'crosvm',
          cmdline: [
            'crosvm',
            'run',
            '--name',
            'vm,with,commas',
            '--vfio',
            '/sys/bus/pci/devices/0000:17:00.0',
          ],
          fds: [{ cdev: GPU }],
        },
      ],
    };
    await buildHostTree(root, spec);
    const snapshot = await collectHost(new HostFs(root));
    expect(device(snapshot, GPU).holder).toEqual({
      pid: 5151,
      command: 'crosvm',
      vm: 'vm,with,commas',
    });
    // cloud-hypervisor's command line names no VM.
    expect(device(snapshot, AUDIO).holder).toEqual({
      pid: 5150,
      command: 'cloud-hyperviso',
      vm: null,
    });
    expect(device(snapshot, NIC_HELD)).toMatchObject({ inUse: false, holder: null });
  });
});

describe('capture of a host with VMs running', () => {
  it('scans the same as its source, and keeps of a holder only what names its VM', async () => {
    const root = await vmRunning('capture-src');
    const out = path.join(await tempRoot('capture-out'), 'copy');
    const run = runAgent(['capture', '--root', root, '--out', out]);
    expect(run.status, run.stderr).toBe(0);
    const scan = (at: string) => {
      const cli = runAgent(['scan', '--json', '--root', at]);
      expect(cli.status, cli.stderr).toBe(0);
      return { ...JSON.parse(cli.stdout), collectedAt: null };
    };
    const copy = scan(out);
    expect(copy).toEqual(scan(root));
    expect(copy.devices.find((d: Device) => d.address === GPU)?.holder).toEqual(QEMU);
    // libvirt's -device lines (and whatever secrets a command line carries) stay behind.
    const cmdline = await readFile(path.join(out, `proc/${VM_RUNNING_QEMU_PID}/cmdline`), 'utf8');
    expect(cmdline.split('\0')).toEqual([
      '/usr/bin/qemu-system-x86_64',
      '-name',
      `guest=${VM_RUNNING_VM_NAME},debug-threads=on`,
      '-uuid',
      '6f0c1d2e-8a4b-4c3d-9e5f-7a1b2c3d4e5f',
      '',
    ]);
    // Processes that hold no vfio fd are not copied at all.
    await expect(readFile(path.join(out, 'proc/1834/comm'), 'utf8')).rejects.toThrow();
  });
});

describe('a daemon rescanning with a holder cache', () => {
  /** A HostFs that counts how often /proc itself is listed (a full walk of every process). */
  class CountingFs extends HostFs {
    walks = 0;
    override async listDir(p: string): Promise<string[]> {
      if (p === '/proc') this.walks += 1;
      return super.listDir(p);
    }
  }

  it('walks /proc once while the same holders hold the same devices, again when one changes', async () => {
    const root = await vmRunning('cache');
    const fs = new CountingFs(root);
    let now = 0;
    const cache = new HolderCache(60_000, () => now);
    const first = await collectHost(fs, { holders: cache });
    expect(fs.walks).toBe(1);
    const second = await collectHost(fs, { holders: cache });
    expect(fs.walks).toBe(1);
    expect(device(second, GPU).holder).toEqual(device(first, GPU).holder);
    expect(device(second, NIC_HELD)).toMatchObject({ inUse: true, holder: null });

    // QEMU exits and another VM takes the group at once: the cached holder no longer has it open.
    await rm(path.join(root, `proc/${VM_RUNNING_QEMU_PID}`), { recursive: true });
    const next = path.join(root, 'proc/5555');
    await mkdir(path.join(next, 'fd'), { recursive: true });
    await writeFile(path.join(next, 'comm'), 'qemu-system-x86\n');
    await writeFile(path.join(next, 'cmdline'), 'qemu-system-x86_64\0-name\0next-vm\0');
    await symlink('/dev/vfio/21', path.join(next, 'fd/3'));
    const third = await collectHost(fs, { holders: cache });
    expect(fs.walks).toBe(2);
    expect(device(third, GPU).holder).toEqual({
      pid: 5555,
      command: 'qemu-system-x86',
      vm: 'next-vm',
    });

    // An answer is trusted for a minute at most (anonymous holders cannot be re-checked).
    await collectHost(fs, { holders: cache });
    expect(fs.walks).toBe(2);
    now += 60_000;
    await collectHost(fs, { holders: cache });
    expect(fs.walks).toBe(3);
  });
});
