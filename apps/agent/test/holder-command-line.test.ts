// The VM name a holder's command line gives, exactly as each VMM parses its own options.
import { describe, expect, it } from 'vitest';
import {
  MAX_VM_NAME,
  qemuGuestName,
  splitCmdline,
  vmNameOf,
} from '../src/inventory/holder-command-line';

describe('vmNameOf', () => {
  it.each([
    [['/usr/bin/qemu-system-x86_64', '-name', 'guest=web-1,debug-threads=on'], 'web-1'],
    [['qemu-system-aarch64', '-name', 'plain'], 'plain'],
    [['qemu-system-x86_64', '--name', 'process=q,guest=late'], 'late'],
    // `,,` is QEMU's escaped comma, in the implied first value and after `guest=`.
    [['qemu-system-x86_64', '-name', 'a,,b,debug-threads=on'], 'a,b'],
    [['qemu-system-x86_64', '-name', 'guest=x,,y'], 'x,y'],
    // The last -name wins, as QEMU keeps the last option given.
    [['qemu-kvm', '-name', 'first', '-name', 'second'], 'second'],
    // No -name: the -uuid is what identifies it.
    [
      ['qemu-system-x86_64', '-uuid', '6f0c1d2e-8a4b-4c3d-9e5f-7a1b2c3d4e5f'],
      '6f0c1d2e-8a4b-4c3d-9e5f-7a1b2c3d4e5f',
    ],
    [['qemu-system-x86_64', '-name', 'debug-threads=on', '-uuid', 'u-1'], 'u-1'],
    [['crosvm', 'run', '--name', 'pixel'], 'pixel'],
    [['/opt/crosvm', 'run', '--name=pixel2'], 'pixel2'],
    [['firecracker', '--api-sock', '/run/fc.sock', '--id', 'fc-7'], 'fc-7'],
    [['jailer', '--id=fc-8', '--exec-file', '/usr/bin/firecracker'], 'fc-8'],
    // cloud-hypervisor has no name option; a program that is no VMM names none.
    [['cloud-hypervisor', '--api-socket', '/run/ch.sock'], null],
    [['dpdk-testpmd', '-name', 'not-a-vm'], null],
    [['qemu-system-x86_64', '-name'], null],
    [['qemu-system-x86_64', '-name', ''], null],
    [[], null],
  ])('%j → %j', (argv, name) => {
    expect(vmNameOf(argv)).toBe(name);
  });

  it('clips a huge name', () => {
    const name = vmNameOf(['qemu-system-x86_64', '-name', 'x'.repeat(10_000)]);
    expect(name?.length).toBe(MAX_VM_NAME);
  });
});

describe('splitCmdline and qemuGuestName', () => {
  it('a trailing NUL ends the last argument; an empty argument in the middle is kept', () => {
    expect(splitCmdline('qemu\0-name\0\0x\0')).toEqual(['qemu', '-name', '', 'x']);
    expect(splitCmdline('')).toEqual([]);
  });

  it('a first value with = is a key, not the implied guest', () => {
    expect(qemuGuestName('debug-threads=on')).toBeNull();
  });
});
