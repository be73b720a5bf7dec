/** The agent's library surface, for the `run` daemon and tests: collectors without the CLI. */
export { captureHost } from './capture/capture-host';
export { type AgentConfig, loadConfig } from './config';
export { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from './daemon/backoff';
export { AgentError, type AgentErrorCode, EXIT_CODES, type ExitCode } from './errors';
export { HostFs } from './host-fs';
export { collectHost, collectHostFacts } from './inventory/collect';
export { readCritical } from './inventory/read-critical';
export { readIommu } from './inventory/read-iommu';
export { readKernel, readLoadedDrivers } from './inventory/read-kernel';
export { readModulesAlias, readModulesAliasFile } from './inventory/read-modules-alias';
export { readPciDevices } from './inventory/read-pci-devices';
export { readPciIds } from './inventory/read-pci-ids';
export { createLogger, type Logger } from './logger';
