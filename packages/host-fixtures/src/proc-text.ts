/**
 * Text of the procfs files a host tree carries, in the kernel's own formats (the seq_printf
 * formats are quoted next to each generator), so parsers tested on fixtures parse real hosts.
 */
import type { CpuVendor } from './host-spec';

/** Four CPUs: enough to show per-CPU columns and repeated cpuinfo blocks, small to read. */
const CPU_COUNT = 4;

const X86_FLAGS_COMMON =
  'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch';
const INTEL_FLAGS_EXTRA =
  'vmx smx est tm2 pdcm dca tsc_deadline_timer xsaveopt invpcid_single ssbd ibrs ibpb stibp ept vpid ept_ad fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsavec xgetbv1 xsaves wbnoinvd dtherm ida arat pln pts avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid fsrm md_clear pconfig flush_l1d arch_capabilities';
const AMD_FLAGS_EXTRA =
  'mmxext fxsr_opt cmp_legacy svm extapic cr8_legacy sse4a misalignsse osvw ibs skinit wdt tce topoext perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 invpcid_single hw_pstate ssbd mba ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin brs arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold v_vmsave_vmload vgif v_spec_ctrl umip pku ospke vaes vpclmulqdq rdpid overflow_recov succor smca';

export function cpuinfoText(vendor: CpuVendor, virtualMachine: boolean): string {
  const blocks: string[] = [];
  for (let cpu = 0; cpu < CPU_COUNT; cpu++) {
    blocks.push(vendor === 'arm' ? armCpuBlock(cpu) : x86CpuBlock(vendor, cpu, virtualMachine));
  }
  // Each processor block ends with an empty line, the file with one more.
  return `${blocks.join('\n\n')}\n\n`;
}

function x86CpuBlock(vendor: 'intel' | 'amd', cpu: number, virtualMachine: boolean): string {
  const intel = vendor === 'intel';
  // The kernel puts `hypervisor` right after the CPUID.1:ECX features (after `rdrand`).
  const common = virtualMachine
    ? X86_FLAGS_COMMON.replace('rdrand', 'rdrand hypervisor')
    : X86_FLAGS_COMMON;
  const flags = `${common} ${intel ? INTEL_FLAGS_EXTRA : AMD_FLAGS_EXTRA}`;
  const fields: Array<[string, string]> = [
    ['processor', String(cpu)],
    ['vendor_id', intel ? 'GenuineIntel' : 'AuthenticAMD'],
    ['cpu family', intel ? '6' : '25'],
    ['model', intel ? '106' : '1'],
    [
      'model name',
      intel ? 'Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz' : 'AMD EPYC 7543 32-Core Processor',
    ],
    ['stepping', intel ? '6' : '1'],
    ['microcode', intel ? '0xd0003e7' : '0xa0011d5'],
    ['cpu MHz', intel ? '2000.000' : '2800.000'],
    ['cache size', intel ? '49152 KB' : '512 KB'],
    ['physical id', '0'],
    ['siblings', String(CPU_COUNT)],
    ['core id', String(cpu)],
    ['cpu cores', String(CPU_COUNT)],
    ['apicid', String(cpu * 2)],
    ['initial apicid', String(cpu * 2)],
    ['fpu', 'yes'],
    ['fpu_exception', 'yes'],
    ['cpuid level', intel ? '27' : '16'],
    ['wp', 'yes'],
    ['flags', flags],
    [
      'bugs',
      intel
        ? 'spectre_v1 spectre_v2 spec_store_bypass swapgs bhi'
        : 'sysret_ss_attrs spectre_v1 spectre_v2 spec_store_bypass srso',
    ],
    ['bogomips', intel ? '4000.00' : '5600.00'],
    ['clflush size', '64'],
    ['cache_alignment', '64'],
    [
      'address sizes',
      intel ? '46 bits physical, 57 bits virtual' : '48 bits physical, 48 bits virtual',
    ],
    ['power management', ''],
  ];
  // show_cpuinfo's literal formats: names shorter than a tab stop get two tabs ("model\t\t: "),
  // and "power management:" has none.
  return fields
    .map(([name, value]) => {
      if (name === 'power management') return `${name}:${value}`;
      return `${name}${name.length < 8 ? '\t\t' : '\t'}: ${value}`;
    })
    .join('\n');
}

/** arm64's c_show: Neoverse N1 (implementer 0x41 = Arm Ltd, part 0xd0c). */
function armCpuBlock(cpu: number): string {
  return [
    `processor\t: ${cpu}`,
    'BogoMIPS\t: 50.00',
    'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs',
    'CPU implementer\t: 0x41',
    'CPU architecture: 8',
    'CPU variant\t: 0x3',
    'CPU part\t: 0xd0c',
    'CPU revision\t: 1',
  ].join('\n');
}

export interface MsiSource {
  address: string;
  /** What request_irq named it: shown in the last column. */
  name: string;
}

/**
 * /proc/interrupts (show_interrupts): `%*d: ` irq, `%10u ` per CPU, then the chip name `%8s`,
 * hwirq and trigger, then the action name. With interrupt remapping the x86 chips are `IR-`.
 */
export function interruptsText(
  vendor: CpuVendor,
  remapping: boolean,
  iommuUnits: readonly string[],
  msi: readonly MsiSource[],
): string {
  const header = `${' '.repeat(11)}${Array.from({ length: CPU_COUNT }, (_, i) => `CPU${i}`.padEnd(11)).join('')}`;
  const rows: string[] = [header.trimEnd()];
  const row = (irq: string, counts: number[], chip: string, hw: string, name: string) => {
    const cols = counts.map((c) => `${String(c).padStart(10)} `).join('');
    rows.push(`${irq.padStart(4)}: ${cols} ${chip.padStart(8)}  ${hw.padEnd(11)} ${name}`);
  };
  const zeros = (first: number) => [first, ...Array.from({ length: CPU_COUNT - 1 }, () => 0)];
  if (vendor === 'arm') {
    row('11', zeros(6412), 'GICv3', '27 Level', 'arch_timer');
    row('14', zeros(0), 'GICv3', '33 Level', 'uart-pl011');
  } else {
    const ioapic = remapping ? 'IR-IO-APIC' : 'IO-APIC';
    row('0', zeros(43), ioapic, '2-edge', 'timer');
    row('8', zeros(0), ioapic, '8-edge', 'rtc0');
    row('9', zeros(0), ioapic, '9-fasteoi', 'acpi');
  }
  let irq = 24;
  for (const unit of iommuUnits) {
    if (vendor === 'intel') row(String(irq++), zeros(0), 'DMAR-MSI', '0-edge', unit);
    if (vendor === 'amd') row(String(irq++), zeros(0), 'AMD-Vi', '0-edge', 'AMD-Vi');
  }
  const chip = vendor === 'arm' ? 'ITS-PCI-MSI' : remapping ? 'IR-PCI-MSI' : 'PCI-MSI';
  for (const source of msi) {
    row(String(irq++), zeros(128), chip, `${msiHwirq(source.address)}-edge`, source.name);
  }
  rows.push(
    `NMI: ${zeros(0)
      .map((c) => `${String(c).padStart(10)} `)
      .join('')}  Non-maskable interrupts`,
  );
  return `${rows.join('\n')}\n`;
}

/** pci_msi_domain_calc_hwirq: `pci_dev_id(dev) << 11`, where pci_dev_id = bus << 8 | devfn. */
function msiHwirq(address: string): number {
  const [, bus = '0', dev = '0', fn = '0'] =
    /:([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/.exec(address) ?? [];
  const devfn = (Number.parseInt(dev, 16) << 3) | Number(fn);
  return ((Number.parseInt(bus, 16) << 8) | devfn) * 2048;
}

export interface RootMount {
  majorMinor: string;
  /** `/dev/nvme0n1p2`. */
  source: string;
}

/**
 * /proc/self/mountinfo (show_mountinfo): `id parent maj:min root mountpoint options optional - fstype
 * source superoptions`. Without a root disk, `/` is a rootfs with an anonymous device (0:x),
 * which tells a reader there is no block device behind it.
 */
export function mountinfoText(root: RootMount | null): string {
  const rootLine =
    root === null
      ? '1 1 0:2 / / rw shared:1 - rootfs rootfs rw'
      : `26 1 ${root.majorMinor} / / rw,relatime shared:1 - ext4 ${root.source} rw,errors=remount-ro`;
  return `${[
    rootLine,
    '22 26 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw',
    '23 26 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
    '24 26 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=65817600k,nr_inodes=16454400,mode=755,inode64',
    '25 26 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=13170336k,mode=755,inode64',
    '27 24 0:24 / /dev/shm rw,nosuid,nodev shared:3 - tmpfs tmpfs rw,inode64',
  ].join('\n')}\n`;
}

/** /proc/mounts (show_vfsmnt): `source mountpoint fstype options 0 0`. */
export function mountsText(root: RootMount | null): string {
  const rootLine =
    root === null
      ? 'rootfs / rootfs rw 0 0'
      : `${root.source} / ext4 rw,relatime,errors=remount-ro 0 0`;
  return `${[
    'sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0',
    'proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0',
    'udev /dev devtmpfs rw,nosuid,relatime,size=65817600k,nr_inodes=16454400,mode=755,inode64 0 0',
    'tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=13170336k,mode=755,inode64 0 0',
    rootLine,
    'tmpfs /dev/shm tmpfs rw,nosuid,nodev,inode64 0 0',
  ].join('\n')}\n`;
}

/** IPv4 addresses as /proc/net/route prints them: the __be32 read as a little-endian u32. */
function routeHex(ip: string): string {
  return ip
    .split('.')
    .reverse()
    .map((octet) => Number(octet).toString(16).toUpperCase().padStart(2, '0'))
    .join('');
}

/** Documentation-range addressing (RFC 5737): the same on every generated host. */
const IPV4_SUBNET = '192.0.2.0';
const IPV4_MASK = '255.255.255.0';
const IPV4_GATEWAY = '192.0.2.1';

/**
 * /proc/net/route (fib_route_seq_show): a `%-127s` header, then per route
 * `%s\t%08X\t%08X\t%04X\t%d\t%u\t%d\t%08X\t%d\t%u\t%u` padded to 127 columns by seq_pad.
 */
export function routeText(defaultIface: string | null): string {
  const pad = (line: string) => `${line.padEnd(127)}\n`;
  let text = pad(
    'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
  );
  if (defaultIface === null) return text;
  const route = (dest: string, gw: string, flags: number, metric: number, mask: string) =>
    pad(
      [
        defaultIface,
        routeHex(dest),
        routeHex(gw),
        flags.toString(16).toUpperCase().padStart(4, '0'),
        '0',
        '0',
        String(metric),
        routeHex(mask),
        '0',
        '0',
        '0',
      ].join('\t'),
    );
  // RTF_UP | RTF_GATEWAY for the default route, RTF_UP for the on-link subnet.
  text += route('0.0.0.0', IPV4_GATEWAY, 0x3, 100, '0.0.0.0');
  text += route(IPV4_SUBNET, '0.0.0.0', 0x1, 100, IPV4_MASK);
  return text;
}

const ZERO6 = '0'.repeat(32);

/**
 * /proc/net/ipv6_route (ipv6_route_native_seq_show): `%pi6 %02x %pi6 %02x <gw %pi6>` then
 * ` %08x %08x %08x %08x %8s\n` (metric, refcnt, use, flags, device). Loopback routes and the
 * unreachable `::/0` on `lo` (RTF_REJECT) are always there, as on a real host.
 */
export function ipv6RouteText(iface: string | null, defaultRoute: boolean): string {
  const line = (
    dst: string,
    plen: number,
    gw: string,
    metric: number,
    flags: number,
    dev: string,
  ) =>
    `${dst} ${hex2(plen)} ${ZERO6} 00 ${gw} ${hex8(metric)} ${hex8(1)} ${hex8(0)} ${hex8(flags)} ${dev.padStart(8)}\n`;
  let text = '';
  if (iface !== null) {
    text += line('20010db8000000000000000000000000', 64, ZERO6, 256, 0x1, iface);
    text += line('fe800000000000000000000000000000', 64, ZERO6, 256, 0x1, iface);
    if (defaultRoute) {
      // RTF_UP | RTF_GATEWAY: a static default via the link-local router.
      text += line(ZERO6, 0, 'fe800000000000000000000000000001', 1024, 0x3, iface);
    }
  }
  text += line('00000000000000000000000000000001', 128, ZERO6, 0, 0x80200001, 'lo');
  // RTF_REJECT | RTF_NONEXTHOP: the kernel's catch-all unreachable route.
  text += line(ZERO6, 0, ZERO6, 0xffffffff, 0x00200200, 'lo');
  return text;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}
