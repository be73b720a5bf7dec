export { type CapacityInput, type FleetCapacity, fleetCapacity } from './capacity';
export { type DeviceSearchInput, searchDevices } from './devices';
export { type GroupDetail, getGroup } from './groups';
export { getHost, type HostDetail, type HostListInput, listHosts } from './hosts';
export { type FleetSummary, fleetSummary } from './summary';
