/**
 * The `vfio-bound` host with its VMs running: libvirt's QEMU holds the RTX 3090 and its audio
 * function (group 21: the group fd, a container and a device fd each, as QEMU opens them), and a
 * DPDK process holds the X710's second port through a device fd alone (it closed the group after
 * taking the device), so /proc does not say which device that fd is: in use, holder unknown.
 * Other processes have ordinary files open, so a holder scan has to look past them.
 */
import type { ProcessSpec } from './host-spec';
import type { ScenarioSpec } from './scenarios';

export const VM_RUNNING_QEMU_PID = 4242;
export const VM_RUNNING_VM_NAME = 'win11-gaming';
export const VM_RUNNING_DPDK_PID = 7311;

const PROCESSES: ProcessSpec[] = [
  { pid: 1, comm: 'systemd', cmdline: ['/sbin/init'], fds: [{ target: 'socket:[1187]' }] },
  {
    pid: 1834,
    comm: 'libvirtd',
    cmdline: ['/usr/sbin/libvirtd', '--timeout', '120'],
    fds: [{ target: 'socket:[20411]' }, { target: '/run/libvirt/libvirtd.pid' }],
  },
  {
    pid: VM_RUNNING_QEMU_PID,
    // comm is cut to 15 bytes (TASK_COMM_LEN).
    comm: 'qemu-system-x86',
    cmdline: [
      '/usr/bin/qemu-system-x86_64',
      '-name',
      `guest=${VM_RUNNING_VM_NAME},debug-threads=on`,
      '-S',
      '-machine',
      'pc-q35-7.2,usb=off,vmport=off,dump-guest-core=off,memory-backend=pc.ram',
      '-uuid',
      '6f0c1d2e-8a4b-4c3d-9e5f-7a1b2c3d4e5f',
      '-device',
      '{"driver":"vfio-pci","host":"0000:17:00.0","id":"hostdev0","bus":"pci.5","addr":"0x0"}',
      '-device',
      '{"driver":"vfio-pci","host":"0000:17:00.1","id":"hostdev1","bus":"pci.6","addr":"0x0"}',
    ],
    fds: [
      { target: '/dev/kvm' },
      { target: 'anon_inode:kvm-vm' },
      { container: true },
      { group: 21 },
      { device: '0000:17:00.0' },
      { device: '0000:17:00.1' },
      { target: 'socket:[48213]' },
    ],
  },
  {
    pid: VM_RUNNING_DPDK_PID,
    comm: 'dpdk-testpmd',
    cmdline: ['dpdk-testpmd', '-l', '0-3', '-a', '0000:65:00.1', '--', '-i'],
    fds: [{ container: true }, { device: '0000:65:00.1' }],
  },
];

export function vmRunning(base: ScenarioSpec): ScenarioSpec {
  return {
    ...base,
    hostname: 'vm-host-07',
    machineId: '5d2e8c1a7b9f4e3d8c6a1f2b3e4d5c6a',
    devices: base.devices.map((device) =>
      device.address === '0000:65:00.1'
        ? { ...device, driver: 'vfio-pci', driverOverride: 'vfio-pci', netInterfaces: [] }
        : device,
    ),
    processes: PROCESSES,
  };
}
