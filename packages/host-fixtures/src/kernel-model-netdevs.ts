/**
 * Netdevs in the kernel model: a host driver's remove() unregisters its device's netdevs, and its
 * probe() registers them again. Returning netdevs get fresh ifindexes; a predictable name (what
 * udev gives) comes back as it was, a kernel `eth%d` name is allocated again (the lowest free
 * number).
 */
import type { ModelState, NetdevRecord, SysTree } from './kernel-model-tree';

/** The driver's remove(): its netdevs go, remembered in the state for its return. */
export async function takeNetdevs(
  tree: SysTree,
  state: ModelState,
  address: string,
  devicePath: string,
): Promise<void> {
  const netdevs = await tree.netdevsOf(devicePath);
  if (netdevs.length > 0) await tree.noteIfindexes(state);
  for (const netdev of netdevs) {
    await tree.remove(`sys/class/net/${netdev.name}`);
    await tree.remove(netdev.virtioDir ?? netdev.dir);
  }
  if ((await tree.list(`${devicePath}/net`)).length === 0) {
    await tree.remove(`${devicePath}/net`);
  }
  if (netdevs.length > 0) {
    state.netdevs[address] = [...(state.netdevs[address] ?? []), ...netdevs];
  }
}

/** A host driver's probe(): the netdevs its device had come back. */
export async function restoreNetdevs(
  tree: SysTree,
  state: ModelState,
  address: string,
): Promise<void> {
  const records = state.netdevs[address];
  if (records === undefined) return;
  delete state.netdevs[address];
  for (const record of records) await writeNetdev(tree, state, record);
}

async function writeNetdev(tree: SysTree, state: ModelState, record: NetdevRecord): Promise<void> {
  const { out } = tree;
  const name = await netdevName(tree, record.name);
  const dir = `${record.dir.slice(0, record.dir.lastIndexOf('/'))}/${name}`;
  // A re-registered netdev gets a fresh ifindex.
  await out.attr(`${dir}/ifindex`, await tree.nextIfindex(state));
  await out.attr(`${dir}/operstate`, record.operstate);
  await out.link(`${dir}/device`, record.owner);
  await out.link(`sys/class/net/${name}`, dir);
}

/**
 * The name a returning netdev gets. Drivers register `eth%d` and the kernel takes the lowest
 * free number (__dev_alloc_name); udev then renames it to its predictable name, which for a
 * predictable name (enp101s0f0) is the old one. A name still of the eth%d form is one nothing
 * renamed (no udev, net.ifnames=0), so it is the kernel's pick again. Found on a real 6.1 guest
 * without udev: a group rolled back in reverse order swapped eth1 and eth2.
 */
async function netdevName(tree: SysTree, old: string): Promise<string> {
  if (!/^eth\d+$/.test(old)) return old;
  const used = new Set(await tree.list('sys/class/net'));
  for (let n = 0; ; n += 1) if (!used.has(`eth${n}`)) return `eth${n}`;
}
