/**
 * Names for PCI class codes without pci.ids: a host may not ship the database (minimal images,
 * containers), and an inventory must still say "NVM Express" rather than "Class 0108". The table
 * follows the PCI Code and ID Assignment Specification, worded as pci.ids words it so that a name
 * does not change depending on whether the database was found.
 */
import { ParseError } from '../errors';

const BASE_CLASSES: Readonly<Record<string, string>> = {
  '00': 'Unclassified device',
  '01': 'Mass storage controller',
  '02': 'Network controller',
  '03': 'Display controller',
  '04': 'Multimedia controller',
  '05': 'Memory controller',
  '06': 'Bridge',
  '07': 'Communication controller',
  '08': 'Generic system peripheral',
  '09': 'Input device controller',
  '0a': 'Docking station',
  '0b': 'Processor',
  '0c': 'Serial bus controller',
  '0d': 'Wireless controller',
  '0e': 'Intelligent controller',
  '0f': 'Satellite communications controller',
  '10': 'Encryption controller',
  '11': 'Signal processing controller',
  '12': 'Processing accelerators',
  '13': 'Non-Essential Instrumentation',
  '40': 'Coprocessor',
  ff: 'Unassigned class',
};

/** Keyed by base class + subclass (4 lowercase hex digits). */
const SUBCLASSES: Readonly<Record<string, string>> = {
  '0000': 'Non-VGA unclassified device',
  '0001': 'VGA compatible unclassified device',
  '0005': 'Image coprocessor',
  '0100': 'SCSI storage controller',
  '0101': 'IDE interface',
  '0102': 'Floppy disk controller',
  '0103': 'IPI bus controller',
  '0104': 'RAID bus controller',
  '0105': 'ATA controller',
  '0106': 'SATA controller',
  '0107': 'Serial Attached SCSI controller',
  '0108': 'Non-Volatile memory controller',
  '0109': 'Universal Flash Storage controller',
  '0180': 'Mass storage controller',
  '0200': 'Ethernet controller',
  '0201': 'Token ring network controller',
  '0202': 'FDDI network controller',
  '0203': 'ATM network controller',
  '0204': 'ISDN controller',
  '0205': 'WorldFip controller',
  '0206': 'PICMG controller',
  '0207': 'Infiniband controller',
  '0208': 'Fabric controller',
  '0280': 'Network controller',
  '0300': 'VGA compatible controller',
  '0301': 'XGA compatible controller',
  '0302': '3D controller',
  '0380': 'Display controller',
  '0400': 'Multimedia video controller',
  '0401': 'Multimedia audio controller',
  '0402': 'Computer telephony device',
  '0403': 'Audio device',
  '0480': 'Multimedia controller',
  '0500': 'RAM memory',
  '0501': 'FLASH memory',
  '0502': 'CXL',
  '0580': 'Memory controller',
  '0600': 'Host bridge',
  '0601': 'ISA bridge',
  '0602': 'EISA bridge',
  '0603': 'MicroChannel bridge',
  '0604': 'PCI bridge',
  '0605': 'PCMCIA bridge',
  '0606': 'NuBus bridge',
  '0607': 'CardBus bridge',
  '0608': 'RACEway bridge',
  '0609': 'Semi-transparent PCI-to-PCI bridge',
  '060a': 'InfiniBand to PCI host bridge',
  '0680': 'Bridge',
  '0700': 'Serial controller',
  '0701': 'Parallel controller',
  '0702': 'Multiport serial controller',
  '0703': 'Modem',
  '0704': 'GPIB controller',
  '0705': 'Smart Card controller',
  '0780': 'Communication controller',
  '0800': 'PIC',
  '0801': 'DMA controller',
  '0802': 'Timer',
  '0803': 'RTC',
  '0804': 'PCI Hot-plug controller',
  '0805': 'SD Host controller',
  '0806': 'IOMMU',
  '0807': 'Root Complex Event Collector',
  '0880': 'System peripheral',
  '0899': 'Timing Card',
  '0900': 'Keyboard controller',
  '0901': 'Digitizer Pen',
  '0902': 'Mouse controller',
  '0903': 'Scanner controller',
  '0904': 'Gameport controller',
  '0980': 'Input device controller',
  '0a00': 'Generic Docking Station',
  '0a80': 'Docking Station',
  '0b00': '386',
  '0b01': '486',
  '0b02': 'Pentium',
  '0b10': 'Alpha',
  '0b20': 'Power PC',
  '0b30': 'MIPS',
  '0b40': 'Co-processor',
  '0c00': 'FireWire (IEEE 1394)',
  '0c01': 'ACCESS Bus',
  '0c02': 'SSA',
  '0c03': 'USB controller',
  '0c04': 'Fibre Channel',
  '0c05': 'SMBus',
  '0c06': 'InfiniBand',
  '0c07': 'IPMI Interface',
  '0c08': 'SERCOS interface',
  '0c09': 'CANBUS',
  '0c0a': 'MIPI I3C',
  '0c80': 'Serial bus controller',
  '0d00': 'IRDA controller',
  '0d01': 'Consumer IR controller',
  '0d10': 'RF controller',
  '0d11': 'Bluetooth',
  '0d12': 'Broadband',
  '0d20': '802.11a 5 GHz controller',
  '0d21': '802.11b 2.4 GHz controller',
  '0d40': 'Cellular controller/modem',
  '0d41': 'Cellular controller/modem plus Ethernet (802.11)',
  '0d80': 'Wireless controller',
  '0e00': 'I2O',
  '0f01': 'Satellite TV controller',
  '0f02': 'Satellite audio communication controller',
  '0f03': 'Satellite voice communication controller',
  '0f04': 'Satellite data communication controller',
  '1000': 'Network and computing encryption device',
  '1010': 'Entertainment encryption device',
  '1080': 'Encryption controller',
  '1100': 'DPIO module',
  '1101': 'Performance counters',
  '1110': 'Communication synchronizer',
  '1120': 'Signal processing management',
  '1180': 'Signal processing controller',
  '1200': 'Processing accelerators',
  '1201': 'SNIA Smart Data Accelerator Interface (SDXI) controller',
};

/**
 * The subclasses whose programming interface says what the device actually is (UHCI vs xHCI,
 * AHCI vs vendor SATA, NVMe vs NVMHCI). For every other class the prog-if is noise ("VGA
 * controller" on a VGA controller), so it is left out of the name, by this table and by pci.ids.
 */
export const PROG_IF_SUBCLASSES: ReadonlySet<string> = new Set(['0106', '0108', '0c03']);

const PROG_IFS: Readonly<Record<string, string>> = {
  '010600': 'Vendor specific',
  '010601': 'AHCI 1.0',
  '010602': 'Serial Storage Bus',
  '010801': 'NVMHCI',
  '010802': 'NVM Express',
  '010803': 'NVM Express administrative controller',
  '0c0300': 'UHCI',
  '0c0310': 'OHCI',
  '0c0320': 'EHCI',
  '0c0330': 'XHCI',
  '0c0340': 'USB4 Host Interface',
  '0c0380': 'Unspecified',
  '0c03fe': 'USB Device',
};

/** Header type 1 (PCI-PCI) and 2 (CardBus) bridges, plus host bridges: never a VM's device. */
const BRIDGE_SUBCLASSES: ReadonlySet<string> = new Set(['0600', '0604', '0607', '0609']);

function normalizeClassCode(classCode: string): string {
  if (!/^[0-9a-f]{6}$/i.test(classCode)) {
    throw new ParseError('PCI class code', classCode, 'expected 6 hex digits such as 0c0330');
  }
  return classCode.toLowerCase();
}

/** `USB controller (XHCI)`: the prog-if is named only for PROG_IF_SUBCLASSES. */
export function composeClassName(subclassName: string, progIfName: string | null): string {
  return progIfName === null ? subclassName : `${subclassName} (${progIfName})`;
}

/**
 * Name of a class code (6 hex digits: base class, subclass, prog-if) from the built-in table:
 * the subclass name, with the prog-if for USB, SATA and NVMe; else the base class name; else
 * `Class xxxx`, as lspci prints an unknown class. Throws ParseError for a malformed class code.
 */
export function pciClassName(classCode: string): string {
  const code = normalizeClassCode(classCode);
  const sub = code.slice(0, 4);
  const subName = SUBCLASSES[sub];
  if (subName !== undefined) {
    const progIf = PROG_IF_SUBCLASSES.has(sub) ? (PROG_IFS[code] ?? null) : null;
    return composeClassName(subName, progIf);
  }
  return BASE_CLASSES[code.slice(0, 2)] ?? `Class ${sub}`;
}

/**
 * True for the classes Linux treats as bridges (pci_is_bridge: type 1 and 2 headers), plus host
 * bridges. An ISA bridge (0601) or "other bridge" (0680) is a type-0 function that vfio-pci
 * binds like any endpoint, so it is not a bridge here. Throws ParseError for a malformed class code.
 */
export function isBridgeClass(classCode: string): boolean {
  return BRIDGE_SUBCLASSES.has(normalizeClassCode(classCode).slice(0, 4));
}
