export {
  API_APPLICATION_NAME,
  type CreateDbOptions,
  createDb,
  type Database,
  type DbDriver,
  type DbHandle,
  DEFAULT_DATA_DIR,
  describePostgresUrl,
  MIGRATION_LOCK_KEY,
  MIGRATIONS_FOLDER,
  ping,
  type Schema,
  type Transaction,
} from './client';
export { DATA_DIR_LOCK_FILE } from './data-dir';
export {
  bulkUpsertDevices,
  chunks,
  DEVICE_ROW_PARAMETERS,
  DEVICE_ROWS_PER_STATEMENT,
  deleteDevicesNotIn,
  deviceJson,
  deviceRow,
  type HostTopology,
  loadHostTopology,
  lockedTopologyColumns,
  MAX_BIND_PARAMETERS,
  type SyncResult,
  syncHostLabels,
  syncIommuGroups,
  textArrayLiteral,
  topologyIfCurrent,
  type UpsertResult,
} from './devices';
export { type DbEnv, dbEnvSchema, parseDbEnv } from './env';
export {
  type FirstInventory,
  hostInventoryEmptySql,
  insertFirstInventory,
} from './first-inventory';
export {
  assertChannel,
  type Listen,
  MAX_NOTIFY_PAYLOAD_BYTES,
  notify,
  pgliteListen,
  postgresListen,
  type Unlisten,
} from './notify';
export { isQueryCanceled, isUniqueViolation } from './pg-errors';
export {
  boundToVfioSql,
  type RollupSyncResult,
  rebuildAllRollups,
  rollupInputs,
  syncHostRollups,
} from './rollups';
export * from './schema';
