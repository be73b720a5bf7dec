// The guest's own view of PCI devices, IOMMU groups, interfaces and /dev/vfio, read straight from
// sysfs without the agent: what the agent's answers are checked against. Shared by the busybox
// scenario (scenario.mjs) and the systemd sandbox run (sandbox.mjs).
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';

export function read(file) {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

export function linkBase(file) {
  try {
    return path.basename(readlinkSync(file));
  } catch {
    return null;
  }
}

function list(dir) {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}

/** The guest's own view, straight from sysfs: what the agent's answers are checked against. */
export function view() {
  const devices = {};
  for (const address of list('/sys/bus/pci/devices')) {
    const dir = `/sys/bus/pci/devices/${address}`;
    const override = read(`${dir}/driver_override`);
    devices[address] = {
      vendor: read(`${dir}/vendor`),
      device: read(`${dir}/device`),
      class: read(`${dir}/class`),
      driver: linkBase(`${dir}/driver`),
      override: override === '(null)' ? null : override,
      iommuGroup: linkBase(`${dir}/iommu_group`),
    };
  }
  const groups = {};
  for (const group of list('/sys/kernel/iommu_groups')) {
    groups[group] = list(`/sys/kernel/iommu_groups/${group}/devices`);
  }
  // Which PCI function each interface belongs to (virtio_net's sits one level down, on virtioN).
  const netdevs = {};
  for (const name of list('/sys/class/net')) {
    let dir;
    try {
      dir = path.resolve('/sys/class/net', readlinkSync(`/sys/class/net/${name}`));
    } catch {
      continue;
    }
    const pci = dir
      .split('/')
      .filter((part) => /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/.test(part))
      .pop();
    if (pci !== undefined) netdevs[name] = pci;
  }
  return { devices, groups, netdevs, devVfio: list('/dev/vfio') };
}
