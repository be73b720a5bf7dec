export {
  buildHostTree,
  type HostLayout,
  isVfioDriver,
  type PlacedDevice,
  pciModalias,
  planHostLayout,
} from './build-tree';
export { corruptDevice, type DeviceCorruption, GARBAGE } from './corrupt-device';
export type { CpuVendor, DeviceSpec, HostSpec, ProcessFdSpec, ProcessSpec } from './host-spec';
export {
  hotplug,
  hotUnplug,
  isGroupViableInModel,
  type KernelFault,
  KernelModel,
  type KernelModelOptions,
} from './kernel-model';
export {
  VM_RUNNING_DPDK_PID,
  VM_RUNNING_QEMU_PID,
  VM_RUNNING_VM_NAME,
} from './scenario-vm-running';
export {
  buildScenario,
  SCENARIO_NAMES,
  type ScenarioName,
  type ScenarioOptions,
  scenario,
} from './scenarios';
export { validateHostSpec } from './validate-spec';
