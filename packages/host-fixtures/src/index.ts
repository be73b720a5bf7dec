export {
  buildHostTree,
  type HostLayout,
  isVfioDriver,
  type PlacedDevice,
  pciModalias,
  planHostLayout,
} from './build-tree';
export type { CpuVendor, DeviceSpec, HostSpec } from './host-spec';
export {
  buildScenario,
  SCENARIO_NAMES,
  type ScenarioName,
  type ScenarioOptions,
  scenario,
} from './scenarios';
export { validateHostSpec } from './validate-spec';
