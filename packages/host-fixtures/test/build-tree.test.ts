import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readFile, readlink, realpath, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { testdataPath } from '@vfio-fleet/testdata';
import { afterEach, describe, expect, it } from 'vitest';
import {
  buildHostTree,
  buildScenario,
  type DeviceSpec,
  type HostSpec,
  pciModalias,
  SCENARIO_NAMES,
  scenario,
} from '../src/index';
import { NVIDIA_DKMS_LINES } from '../src/scenario-modules-alias';

const VARIANTS_ALIAS = testdataPath('modules-alias', '6.12.117+deb12-amd64+vfio-variants.alias.gz');
const GHW_SNAPSHOT = testdataPath('sysfs', 'ghw-linux-amd64-accel-nvidia.tar.gz');

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function tempRoot(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'host-fixtures-'));
  tempDirs.push(dir);
  // realpath: os.tmpdir() may itself be a link, and the assertions compare resolved paths.
  return realpath(dir);
}

const read = (root: string, rel: string) => readFile(path.join(root, rel), 'utf8');
const resolve = (root: string, rel: string) => realpath(path.join(root, rel));
const exists = (root: string, rel: string) => existsSync(path.join(root, rel));

/** Where the kernel puts a device: under each upstream bridge, starting at its root bus. */
function expectedDevicePath(spec: HostSpec, device: DeviceSpec): string {
  const byAddress = new Map(spec.devices.map((d) => [d.address, d]));
  const chain: string[] = [];
  let current: DeviceSpec | undefined = device;
  let top = device;
  while (current !== undefined) {
    chain.unshift(current.address);
    top = current;
    const parent: string | undefined =
      current.parent ??
      (current.physfn === undefined ? undefined : byAddress.get(current.physfn)?.parent);
    current = parent === undefined ? undefined : byAddress.get(parent);
  }
  const rootBus = (top.physfn ?? top.address).split(':').slice(0, 2).join(':');
  return ['sys', 'devices', `pci${rootBus}`, ...chain].join('/');
}

/** Devices that sit directly on a root bus are 3 levels under sys/ (devices/pciDDDD:BB/addr). */
function depthUnderSys(devicePath: string): number {
  return devicePath.split('/').length - 1;
}

describe.each(SCENARIO_NAMES)('scenario %s', (name) => {
  it('lays every device out as the kernel does', async () => {
    const root = await tempRoot();
    const spec = await buildScenario(root, name);
    expect(spec).toEqual(scenario(name));
    for (const device of spec.devices) {
      const at = `sys/bus/pci/devices/${device.address}`;
      const expected = expectedDevicePath(spec, device);
      expect(await resolve(root, at)).toBe(path.join(root, expected));
      expect(await readlink(path.join(root, at))).toBe(`../../../${expected.slice('sys/'.length)}`);

      expect(await read(root, `${at}/vendor`)).toBe(`0x${device.vendorId}\n`);
      expect(await read(root, `${at}/device`)).toBe(`0x${device.deviceId}\n`);
      expect(await read(root, `${at}/class`)).toBe(`0x${device.classCode}\n`);
      const modalias = (await read(root, `${at}/modalias`)).trimEnd();
      expect(modalias).toMatch(
        /^pci:v[0-9A-F]{8}d[0-9A-F]{8}sv[0-9A-F]{8}sd[0-9A-F]{8}bc[0-9A-F]{2}sc[0-9A-F]{2}i[0-9A-F]{2}$/,
      );
      expect(modalias).toBe(pciModalias(device));
      expect(await read(root, `${at}/driver_override`)).toBe(
        `${device.driverOverride ?? '(null)'}\n`,
      );

      const driverLink = path.join(root, expected, 'driver');
      if (device.driver === null || device.driver === undefined) {
        expect(exists(root, `${expected}/driver`)).toBe(false);
      } else {
        // Same depth rule as the real snapshot: one `..` per directory level below sys/.
        expect(await readlink(driverLink)).toBe(
          `${'../'.repeat(depthUnderSys(expected))}bus/pci/drivers/${device.driver}`,
        );
        expect(await realpath(driverLink)).toBe(
          path.join(root, 'sys/bus/pci/drivers', device.driver),
        );
        expect(await resolve(root, `sys/bus/pci/drivers/${device.driver}/${device.address}`)).toBe(
          path.join(root, expected),
        );
        if (device.driverModule !== null) {
          expect(await realpath(path.join(driverLink, 'module'))).toMatch(/\/sys\/module\/[^/]+$/);
        }
      }

      const group = path.join(root, expected, 'iommu_group');
      if (spec.iommu.enabled && typeof device.iommuGroup === 'number') {
        const groupDir = path.join(root, 'sys/kernel/iommu_groups', String(device.iommuGroup));
        expect(await realpath(group)).toBe(groupDir);
        expect(await realpath(path.join(groupDir, 'devices', device.address))).toBe(
          path.join(root, expected),
        );
      } else {
        expect(existsSync(group)).toBe(false);
      }
    }
  });

  it('writes only alias lines that are in the real 6.12 +vfio-variants file', async () => {
    const real = new Set(
      gunzipSync(await readFile(VARIANTS_ALIAS))
        .toString('utf8')
        .split('\n'),
    );
    const root = await tempRoot();
    const spec = await buildScenario(root, name);
    const text = await read(root, `lib/modules/${spec.kernelRelease}/modules.alias`);
    const lines = text.trimEnd().split('\n');
    // Besides the real tree's lines: the proprietary nvidia module's, as DKMS adds them.
    for (const line of lines) {
      expect(real.has(line) || NVIDIA_DKMS_LINES.includes(line), line).toBe(true);
    }
    expect(lines).toContain('alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci');
    expect(lines).toContain('alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci');
  });

  it('is deterministic: the same spec gives the same tree', async () => {
    const [a, b] = [await tempRoot(), await tempRoot()];
    await buildScenario(a, name);
    await buildScenario(b, name);
    expect(await snapshot(b)).toEqual(await snapshot(a));
  });
});

/** Root-relative paths of everything under `dir`, not following links (sysfs links loop). */
async function walk(root: string, dir = ''): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir(path.join(root, dir), { withFileTypes: true })) {
    const rel = dir === '' ? entry.name : `${dir}/${entry.name}`;
    found.push(rel);
    if (entry.isDirectory()) found.push(...(await walk(root, rel)));
  }
  return found;
}

/** Every entry of a tree: links by target, files by content. */
async function snapshot(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await walk(root)) {
    const full = path.join(root, entry);
    const stat = await lstat(full);
    if (stat.isSymbolicLink()) out[entry] = `-> ${await readlink(full)}`;
    else if (stat.isFile()) out[entry] = await readFile(full, 'utf8');
    else out[entry] = 'dir';
  }
  return out;
}

describe('link depths against the real ghw sysfs snapshot', () => {
  it('uses the same `driver` link depth rule as the kernel', async () => {
    const dir = await tempRoot();
    execFileSync('tar', ['-xzf', GHW_SNAPSHOT, '-C', dir]);
    const real = await driverLinks(dir);
    expect(real.length).toBeGreaterThan(10);
    const ours = await tempRoot();
    await buildScenario(ours, 'dual-gpu');
    const generated = await driverLinks(ours);
    for (const { devicePath, target } of [...real, ...generated]) {
      expect(target).toMatch(
        new RegExp(`^(\\.\\./){${depthUnderSys(devicePath)}}bus/pci/drivers/`),
      );
    }
    // Same nesting, same text: a device on a root port, and a root port itself.
    const find = (links: typeof real, depth: number) =>
      links.find((l) => depthUnderSys(l.devicePath) === depth)?.target.replace(/[^/]+$/, '');
    expect(find(generated, 3)).toBe(find(real, 3));
    expect(find(generated, 4)).toBe(find(real, 4));
  });
});

async function driverLinks(root: string): Promise<Array<{ devicePath: string; target: string }>> {
  const links: Array<{ devicePath: string; target: string }> = [];
  for (const entry of await walk(path.join(root, 'sys/devices'))) {
    if (path.basename(entry) !== 'driver' || !/\/[0-9a-f]{4}:[^/]+\/driver$/.test(`/${entry}`)) {
      continue;
    }
    const full = path.join(root, 'sys/devices', entry);
    if (!(await lstat(full)).isSymbolicLink()) continue;
    links.push({ devicePath: `sys/devices/${path.dirname(entry)}`, target: await readlink(full) });
  }
  return links;
}

describe('dual-gpu', () => {
  it('groups each GPU with its audio function and marks the ASPEED VGA as fbcon', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'dual-gpu');
    expect((await readdir(path.join(root, 'sys/kernel/iommu_groups/21/devices'))).sort()).toEqual([
      '0000:17:00.0',
      '0000:17:00.1',
    ]);
    expect(await read(root, 'sys/kernel/iommu_groups/21/type')).toBe('DMA\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:02:00.0/boot_vga')).toBe('1\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:17:00.0/boot_vga')).toBe('0\n');
    expect(exists(root, 'sys/bus/pci/devices/0000:17:00.1/boot_vga')).toBe(false);
    expect(await resolve(root, 'sys/bus/pci/devices/0000:02:00.0')).toBe(
      path.join(root, 'sys/devices/pci0000:00/0000:00:1c.0/0000:01:00.0/0000:02:00.0'),
    );
    expect(await read(root, 'sys/class/vtconsole/vtcon1/name')).toBe('(M) frame buffer device\n');
    expect(await read(root, 'sys/class/vtconsole/vtcon1/bind')).toBe('1\n');
    expect(await read(root, 'sys/class/vtconsole/vtcon0/bind')).toBe('0\n');
    expect(await resolve(root, 'sys/class/graphics/fb0/device')).toBe(
      await resolve(root, 'sys/bus/pci/devices/0000:02:00.0'),
    );
    expect(await readdir(path.join(root, 'sys/class/iommu'))).toEqual(['dmar0']);
    expect(await read(root, 'proc/interrupts')).toContain('IR-PCI-MSI');
    expect(await read(root, 'proc/cmdline')).toMatch(/ intel_iommu=on\n$/);
    expect(await read(root, 'proc/cpuinfo')).toMatch(/^vendor_id\t: GenuineIntel$/m);
    expect(await read(root, 'proc/cpuinfo')).not.toMatch(/ hypervisor /);
    expect(await read(root, 'sys/bus/pci/devices/0000:17:00.0/reset_method')).toBe('bus\n');
    expect(exists(root, 'sys/bus/pci/devices/0000:16:02.0/reset_method')).toBe(false);
    expect(exists(root, 'sys/bus/pci/devices/0000:16:02.0/reset')).toBe(false);
    expect(exists(root, 'sys/bus/pci/devices/0000:4b:00.0/reset')).toBe(true);
    // pcieport is built in: no module link, as the kernel shows it.
    expect(exists(root, 'sys/bus/pci/drivers/pcieport/module')).toBe(false);
    expect(await readlink(path.join(root, 'sys/bus/pci/drivers/nvidia/module'))).toBe(
      '../../../../module/nvidia',
    );
    expect(
      await readlink(path.join(root, 'sys/module/snd_hda_intel/drivers/pci:snd_hda_intel')),
    ).toBe('../../../bus/pci/drivers/snd_hda_intel');
    for (const control of ['bind', 'unbind', 'new_id', 'remove_id', 'uevent']) {
      expect(exists(root, `sys/bus/pci/drivers/nvme/${control}`)).toBe(true);
    }
    expect(exists(root, 'sys/bus/pci/drivers_probe')).toBe(true);
    expect(exists(root, 'sys/bus/pci/rescan')).toBe(true);
    expect(exists(root, 'dev/vfio')).toBe(false);
    expect(await read(root, 'etc/hostname')).toBe('gpu-node-01\n');
    expect(await read(root, 'etc/machine-id')).toMatch(/^[0-9a-f]{32}\n$/);
  });

  it('lays the root NVMe namespace out as native multipath does, linked to its controller', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'dual-gpu');
    const mountinfo = await read(root, 'proc/self/mountinfo');
    const rootLine = mountinfo.split('\n').find((l) => l.split(' ')[4] === '/');
    expect(rootLine).toMatch(/^\d+ \d+ 259:2 \/ \/ \S+ .* - ext4 \/dev\/nvme0n1p2 /);
    expect(await read(root, 'proc/mounts')).toMatch(/^\/dev\/nvme0n1p2 \/ ext4 /m);
    const controller = await resolve(root, 'sys/bus/pci/devices/0000:4b:00.0');
    const head = path.join(root, 'sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1');
    expect(await resolve(root, 'sys/dev/block/259:2')).toBe(`${head}/nvme0n1p2`);
    expect(await resolve(root, 'sys/class/block/nvme0n1p2')).toBe(`${head}/nvme0n1p2`);
    expect(await resolve(root, 'sys/block/nvme0n1')).toBe(head);
    expect(await resolve(root, `${path.relative(root, head)}/multipath/nvme0c0n1`)).toBe(
      `${controller}/nvme/nvme0/nvme0c0n1`,
    );
    expect(await resolve(root, 'sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0')).toBe(
      `${controller}/nvme/nvme0`,
    );
    expect(await read(root, 'sys/dev/block/259:0/dev')).toBe('259:0\n');
    expect(await read(root, 'sys/class/block/nvme0n1p2/partition')).toBe('2\n');
  });

  it('puts the root disk under its NVMe controller without multipath', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'mlx5-vf');
    const controller = await resolve(root, 'sys/bus/pci/devices/0000:01:00.0');
    expect(await resolve(root, 'sys/dev/block/259:2')).toBe(
      `${controller}/nvme/nvme0/nvme0n1/nvme0n1p2`,
    );
    expect(await resolve(root, 'sys/block/nvme0n1')).toBe(`${controller}/nvme/nvme0/nvme0n1`);
  });

  it('writes /proc/net/route and ipv6_route in the kernel formats', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'dual-gpu');
    const route = await read(root, 'proc/net/route');
    const lines = route.split('\n');
    expect(lines.at(-1)).toBe('');
    for (const line of lines.slice(0, -1)) expect(line).toHaveLength(127);
    expect(lines[0]?.trimEnd()).toBe(
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
    );
    expect(lines[1]?.trimEnd()).toBe(
      'enp101s0f0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
    );
    expect(lines[2]?.trimEnd()).toBe(
      'enp101s0f0\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0',
    );
    const v6 = await read(root, 'proc/net/ipv6_route');
    for (const line of v6.trimEnd().split('\n')) {
      expect(line).toMatch(
        /^[0-9a-f]{32} [0-9a-f]{2} [0-9a-f]{32} [0-9a-f]{2} [0-9a-f]{32}( [0-9a-f]{8}){4} {1,8}\S+$/,
      );
    }
    // Only the loopback's unreachable ::/0 without ipv6: a reader must not take it for a route.
    expect(v6).toMatch(/^0{32} 00 0{32} 00 0{32} ffffffff 00000001 00000000 00200200 {7}lo$/m);
    expect(v6).not.toMatch(/^0{32} 00 .* enp101s0f0$/m);
    expect(await resolve(root, 'sys/class/net/enp101s0f0/device')).toBe(
      await resolve(root, 'sys/bus/pci/devices/0000:65:00.0'),
    );
    expect(await readlink(path.join(root, 'sys/class/net/enp101s0f0/device'))).toBe(
      '../../../0000:65:00.0',
    );
    expect(await resolve(root, 'sys/class/net/lo')).toBe(
      path.join(root, 'sys/devices/virtual/net/lo'),
    );
  });
});

describe('mlx5-vf', () => {
  it('puts VFs beside their PF with virtfn/physfn links and their own groups', async () => {
    const root = await tempRoot();
    const spec = await buildScenario(root, 'mlx5-vf');
    const pf = 'sys/bus/pci/devices/0000:41:00.0';
    expect(await read(root, `${pf}/sriov_totalvfs`)).toBe('8\n');
    expect(await read(root, `${pf}/sriov_numvfs`)).toBe('2\n');
    expect(await read(root, `${pf}/sriov_drivers_autoprobe`)).toBe('1\n');
    expect(await readlink(path.join(root, pf, 'virtfn0'))).toBe('../0000:41:00.2');
    expect(await readlink(path.join(root, pf, 'virtfn1'))).toBe('../0000:41:00.3');
    expect(exists(root, `${pf}/virtfn2`)).toBe(false);
    expect(await read(root, 'sys/bus/pci/devices/0000:41:00.1/sriov_numvfs')).toBe('0\n');
    // Where VF n goes and what it is, shown whether VFs are enabled or not.
    expect(await read(root, `${pf}/sriov_offset`)).toBe('2\n');
    expect(await read(root, `${pf}/sriov_stride`)).toBe('1\n');
    expect(await read(root, `${pf}/sriov_vf_device`)).toBe('101e\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:41:00.1/sriov_offset')).toBe('9\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:41:00.1/sriov_vf_device')).toBe('101e\n');
    const vf = 'sys/bus/pci/devices/0000:41:00.2';
    expect(await resolve(root, vf)).toBe(
      path.join(root, 'sys/devices/pci0000:40/0000:40:01.1/0000:41:00.2'),
    );
    expect(await resolve(root, `${vf}/physfn`)).toBe(await resolve(root, pf));
    expect(await read(root, `${vf}/modalias`)).toBe(
      'pci:v000015B3d0000101Esv000015B3sd00000083bc02sc00i00\n',
    );
    expect(await read(root, `${vf}/reset_method`)).toBe('flr\n');
    expect(exists(root, `${vf}/sriov_totalvfs`)).toBe(false);
    expect(await readdir(path.join(root, 'sys/kernel/iommu_groups/23/devices'))).toEqual([
      '0000:41:00.2',
    ]);
    expect(await readdir(path.join(root, 'sys/class/iommu'))).toEqual(['ivhd0']);
    expect(await read(root, 'proc/cpuinfo')).toMatch(/^vendor_id\t: AuthenticAMD$/m);
    expect(await read(root, 'proc/cpuinfo')).toMatch(/^flags\t\t: .* svm /m);
    expect(spec.kernelRelease).toBe('6.12.117+deb12-amd64');
  });

  it('takes a whole real modules.alias when given one', async () => {
    const root = await tempRoot();
    const text = gunzipSync(await readFile(VARIANTS_ALIAS)).toString('utf8');
    const spec = await buildScenario(root, 'mlx5-vf', { modulesAlias: text });
    expect(await read(root, `lib/modules/${spec.kernelRelease}/modules.alias`)).toBe(text);
    const none = await tempRoot();
    await buildScenario(none, 'mlx5-vf', { modulesAlias: null });
    expect(exists(none, 'lib/modules')).toBe(false);
  });
});

describe('critical-nvme-nic', () => {
  it('routes by IPv4 and IPv6 through the first X550 port, which shares its group', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'critical-nvme-nic');
    expect(await read(root, 'proc/net/route')).toMatch(/^enp75s0f0\t00000000\t/m);
    expect(await read(root, 'proc/net/ipv6_route')).toMatch(
      /^0{32} 00 0{32} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 enp75s0f0$/m,
    );
    expect((await readdir(path.join(root, 'sys/kernel/iommu_groups/41/devices'))).sort()).toEqual([
      '0000:4b:00.0',
      '0000:4b:00.1',
    ]);
    expect(await resolve(root, 'sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0')).toContain(
      '/0000:17:00.0/nvme/nvme0',
    );
    expect(await read(root, 'sys/class/vtconsole/vtcon0/bind')).toBe('1\n');
    expect(exists(root, 'sys/class/vtconsole/vtcon1')).toBe(false);
    expect(exists(root, 'sys/class/graphics/fb0')).toBe(false);
  });
});

describe('iommu-off', () => {
  it('has no groups, no units and no interrupt remapping', async () => {
    const root = await tempRoot();
    const spec = await buildScenario(root, 'iommu-off');
    expect(spec.cmdline).not.toContain('intel_iommu');
    expect(await readdir(path.join(root, 'sys/kernel/iommu_groups'))).toEqual([]);
    expect(await readdir(path.join(root, 'sys/class/iommu'))).toEqual([]);
    for (const device of spec.devices) {
      expect(exists(root, `sys/bus/pci/devices/${device.address}/iommu_group`)).toBe(false);
    }
    const interrupts = await read(root, 'proc/interrupts');
    expect(interrupts).toContain(' PCI-MSI ');
    expect(interrupts).not.toContain('IR-');
  });
});

describe('vfio-bound', () => {
  it('binds the GPU and its audio to vfio-pci with overrides and /dev/vfio nodes', async () => {
    const root = await tempRoot();
    await buildScenario(root, 'vfio-bound');
    for (const address of ['0000:17:00.0', '0000:17:00.1']) {
      const dir = `sys/bus/pci/devices/${address}`;
      expect(await read(root, `${dir}/driver_override`)).toBe('vfio-pci\n');
      expect(await resolve(root, `${dir}/driver`)).toBe(
        path.join(root, 'sys/bus/pci/drivers/vfio-pci'),
      );
      expect(await resolve(root, `${dir}/driver/module`)).toBe(
        path.join(root, 'sys/module/vfio_pci'),
      );
    }
    expect(await resolve(root, 'sys/module/vfio_pci/drivers/pci:vfio-pci')).toBe(
      path.join(root, 'sys/bus/pci/drivers/vfio-pci'),
    );
    expect((await readdir(path.join(root, 'dev/vfio'))).sort()).toEqual(['21', 'vfio']);
    expect(await read(root, 'sys/kernel/iommu_groups/21/type')).toBe('identity\n');
    for (const module of ['vfio', 'vfio_iommu_type1', 'vfio_pci_core', 'vfio_pci']) {
      expect(exists(root, `sys/module/${module}`)).toBe(true);
    }
    // vfio holds no interrupts until a VM opens the device.
    expect(await read(root, 'proc/interrupts')).not.toContain('0000:17:00.0');
  });
});

/** A small valid host to break one field at a time. */
function baseSpec(): HostSpec {
  return {
    hostname: 'test-host',
    machineId: '0123456789abcdef0123456789abcdef',
    kernelRelease: '6.12.117+deb12-amd64',
    cpuVendor: 'intel',
    cmdline: 'root=/dev/sda2 ro intel_iommu=on',
    iommu: { enabled: true },
    modulesAlias: null,
    loadedModules: [],
    devices: [
      {
        address: '0000:00:01.0',
        vendorId: '8086',
        deviceId: '347a',
        classCode: '060400',
        driver: 'pcieport',
        driverModule: null,
        iommuGroup: 1,
      },
      {
        address: '0000:01:00.0',
        vendorId: '8086',
        deviceId: 'a182',
        classCode: '010601',
        driver: 'ahci',
        parent: '0000:00:01.0',
        iommuGroup: 2,
      },
      {
        address: '0000:00:03.0',
        vendorId: '1af4',
        deviceId: '1041',
        subsystemVendorId: '1af4',
        subsystemDeviceId: '1100',
        classCode: '020000',
        revision: '01',
        driver: 'virtio-pci',
        iommuGroup: 3,
        netInterfaces: ['eth0'],
        virtioNet: true,
      },
    ],
    rootDisk: { address: '0000:01:00.0', disk: 'sda', partition: 'sda2', majorMinor: '8:2' },
    defaultRoute: { iface: 'eth0' },
  };
}

describe('custom specs', () => {
  it('places SATA disks and virtio netdevs as their drivers do', async () => {
    const root = await tempRoot();
    const spec = { ...baseSpec(), virtualMachine: true };
    await buildHostTree(root, spec);
    const ahci = await resolve(root, 'sys/bus/pci/devices/0000:01:00.0');
    expect(await resolve(root, 'sys/dev/block/8:2')).toBe(
      `${ahci}/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda2`,
    );
    expect(await resolve(root, 'sys/block/sda')).toBe(
      `${ahci}/ata1/host0/target0:0:0/0:0:0:0/block/sda`,
    );
    const virtio = await resolve(root, 'sys/bus/pci/devices/0000:00:03.0');
    expect(await resolve(root, 'sys/class/net/eth0')).toBe(`${virtio}/virtio0/net/eth0`);
    // As on a real virtio guest: `device` is the virtio device, one level above `net/`.
    expect(await readlink(path.join(root, 'sys/class/net/eth0/device'))).toBe('../../../virtio0');
    // virtio-pci is modular on Debian: module virtio_pci (dash → underscore).
    expect(await resolve(root, 'sys/bus/pci/drivers/virtio-pci/module')).toBe(
      path.join(root, 'sys/module/virtio_pci'),
    );
    expect(await read(root, 'proc/cpuinfo')).toMatch(/^flags\t\t: .* rdrand hypervisor /m);
    expect(exists(root, 'dev/vfio')).toBe(false);
  });

  it('defaults a VF to its PF parent bus and writes given /dev/vfio entries', async () => {
    const root = await tempRoot();
    const base = baseSpec();
    const spec: HostSpec = {
      ...base,
      devVfio: ['vfio', '9'],
      devices: [
        ...base.devices,
        {
          address: '0000:01:00.1',
          vendorId: '15b3',
          deviceId: '101d',
          classCode: '020000',
          parent: '0000:00:01.0',
          sriov: { totalVfs: 4, numVfs: 1, driversAutoprobe: false },
        },
        {
          address: '0000:01:00.2',
          vendorId: '15b3',
          deviceId: '101e',
          classCode: '020000',
          physfn: '0000:01:00.1',
          driver: 'vfio-pci',
          iommuGroup: 9,
        },
      ],
    };
    await buildHostTree(root, spec);
    expect(await resolve(root, 'sys/bus/pci/devices/0000:01:00.2')).toBe(
      path.join(root, 'sys/devices/pci0000:00/0000:00:01.0/0000:01:00.2'),
    );
    expect(await read(root, 'sys/bus/pci/devices/0000:01:00.1/sriov_drivers_autoprobe')).toBe(
      '0\n',
    );
    // Without offset, stride or vfDeviceId in the spec, the VFs the spec has say them.
    expect(await read(root, 'sys/bus/pci/devices/0000:01:00.1/sriov_offset')).toBe('1\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:01:00.1/sriov_stride')).toBe('1\n');
    expect(await read(root, 'sys/bus/pci/devices/0000:01:00.1/sriov_vf_device')).toBe('101e\n');
    expect((await readdir(path.join(root, 'dev/vfio'))).sort()).toEqual(['9', 'vfio']);
    expect(exists(root, 'sys/bus/pci/devices/0000:01:00.1/driver')).toBe(false);
  });

  it('defaults /dev/vfio to vfio plus the groups bound to vfio drivers', async () => {
    const root = await tempRoot();
    const base = baseSpec();
    const spec: HostSpec = {
      ...base,
      devices: base.devices.map((d) =>
        d.address === '0000:00:03.0' ? { ...d, driver: 'vfio-pci', netInterfaces: [] } : d,
      ),
      defaultRoute: undefined,
    };
    await buildHostTree(root, spec);
    expect((await readdir(path.join(root, 'dev/vfio'))).sort()).toEqual(['3', 'vfio']);
    expect(await read(root, 'proc/net/route')).toHaveLength(128);
  });
});

describe('spec validation', () => {
  const cases: Array<[string, (spec: HostSpec) => HostSpec, RegExp]> = [
    [
      'unknown parent',
      (s) => ({
        ...s,
        devices: s.devices.map((d) => ({ ...d, parent: d.parent && '0000:00:09.0' })),
      }),
      /device 0000:01:00\.0: unknown parent 0000:00:09\.0/,
    ],
    [
      'duplicate address',
      (s) => ({ ...s, devices: [...s.devices, { ...firstDevice(s) }] }),
      /duplicate device address 0000:00:01\.0/,
    ],
    [
      'VF without its PF',
      (s) => ({
        ...s,
        devices: [
          ...s.devices,
          {
            address: '0000:02:00.2',
            vendorId: '15b3',
            deviceId: '101e',
            classCode: '020000',
            physfn: '0000:02:00.0',
          },
        ],
      }),
      /device 0000:02:00\.2: VF whose physfn 0000:02:00\.0 is missing/,
    ],
    [
      'default route on no device',
      (s) => ({ ...s, defaultRoute: { iface: 'bond0' } }),
      /default-route iface bond0 is not on any device/,
    ],
    [
      'root disk on a missing device',
      (s) => ({
        ...s,
        rootDisk: { address: '0000:05:00.0', disk: 'nvme0n1', majorMinor: '259:0' },
      }),
      /root disk nvme0n1 is on missing device 0000:05:00\.0/,
    ],
    [
      'parent that is not a bridge',
      (s) => ({
        ...s,
        devices: s.devices.map((d) =>
          d.address === '0000:01:00.0' ? { ...d, parent: '0000:00:03.0' } : d,
        ),
      }),
      /parent 0000:00:03\.0 is not a PCI bridge/,
    ],
    [
      'uppercase ids',
      (s) => ({
        ...s,
        devices: [{ ...firstDevice(s), vendorId: '8086', deviceId: '347A' }, ...s.devices.slice(1)],
      }),
      /deviceId "347A" is not 4 lowercase hex digits/,
    ],
    [
      'numVfs without VFs',
      (s) => ({
        ...s,
        devices: s.devices.map((d) =>
          d.address === '0000:01:00.0' ? { ...d, sriov: { totalVfs: 8, numVfs: 2 } } : d,
        ),
      }),
      /sriov numVfs is 2 but 0 VFs name it physfn/,
    ],
    [
      'a partition of another disk',
      (s) => ({
        ...s,
        rootDisk: { address: '0000:01:00.0', disk: 'sda', partition: 'sdb1', majorMinor: '8:17' },
      }),
      /root partition "sdb1" is not a partition of sda/,
    ],
    [
      'fbconsole without a boot VGA',
      (s) => ({ ...s, fbconsole: true }),
      /fbconsole is set but no device has bootVga/,
    ],
    [
      'a driver name with a slash',
      (s) => ({ ...s, devices: [{ ...firstDevice(s), driver: '../x' }, ...s.devices.slice(1)] }),
      /driver "\.\.\/x" is not a kernel driver or module name/,
    ],
  ];

  it.each(cases)('rejects %s with a clear message', async (_, breakSpec, message) => {
    const root = await tempRoot();
    await expect(buildHostTree(root, breakSpec(baseSpec()))).rejects.toThrow(message);
    // Nothing is written for a spec that is rejected.
    expect(await readdir(root)).toEqual([]);
  });

  it('rejects parent loops', async () => {
    const spec = baseSpec();
    spec.devices = [
      {
        address: '0000:00:01.0',
        vendorId: '8086',
        deviceId: '347a',
        classCode: '060400',
        parent: '0000:00:02.0',
      },
      {
        address: '0000:00:02.0',
        vendorId: '8086',
        deviceId: '347a',
        classCode: '060400',
        parent: '0000:00:01.0',
      },
    ];
    spec.rootDisk = undefined;
    spec.defaultRoute = undefined;
    await expect(buildHostTree(await tempRoot(), spec)).rejects.toThrow(/parent chain loops/);
  });

  it('rejects a driver claimed by two modules', async () => {
    const spec = { ...baseSpec(), loadedModules: [{ name: 'other', pciDrivers: ['ahci'] }] };
    await expect(buildHostTree(await tempRoot(), spec)).rejects.toThrow(
      /driver ahci comes from other and from ahci/,
    );
  });
});

function firstDevice(spec: HostSpec): DeviceSpec {
  const first = spec.devices[0];
  if (first === undefined) throw new Error('base spec has no devices');
  return first;
}
