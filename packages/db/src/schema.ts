/**
 * The vfio-fleet database schema (drizzle, PostgreSQL dialect; PGlite runs the same SQL).
 *
 * Closed sets of values (host state, device status, roles, job states...) are `text` columns with
 * a CHECK constraint rather than PostgreSQL enums: drizzle applies each migration in a
 * transaction, and a value added with `ALTER TYPE ... ADD VALUE` cannot be used inside the
 * transaction that added it, nor can an enum value ever be removed. A CHECK constraint is
 * replaced in one ordinary statement, so the job state machine can grow without migration tricks.
 *
 * Every timestamp is `timestamptz`: agents, servers and PostgreSQL may sit in different zones.
 */
import { type Device, type Host, type Problem, READINESS_STATUSES } from '@vfio-fleet/core';
import { sql } from 'drizzle-orm';
import {
  type AnyPgColumn,
  bigint,
  bigserial,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

/** The values of a closed set as a CHECK expression: `col IN ('a', 'b')`. */
function oneOf(column: { name: string }, values: readonly string[]) {
  // Values are compile-time constants of this module, never user input, so inlining them is safe;
  // sql.raw keeps them literal in the generated migration instead of bind parameters.
  const list = values.map((value) => `'${value.replaceAll("'", "''")}'`).join(', ');
  return sql.raw(`"${column.name}" IN (${list})`);
}

const timestamps = {
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
};

export const HOST_STATES = ['online', 'offline'] as const;
export type HostState = (typeof HOST_STATES)[number];

export const hosts = pgTable(
  'hosts',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** The enrolled agent's id: the host identity comes from the credential, never the payload. */
    agentId: text('agent_id').notNull().unique(),
    hostname: text('hostname').notNull(),
    machineId: text('machine_id'),
    kernelRelease: text('kernel_release'),
    cpuVendor: text('cpu_vendor'),
    iommuEnabled: boolean('iommu_enabled').notNull().default(false),
    interruptRemapping: text('interrupt_remapping'),
    state: text('state', { enum: HOST_STATES }).notNull().default('offline'),
    lastSeenAt: timestamp('last_seen_at', { withTimezone: true }),
    connectedAt: timestamp('connected_at', { withTimezone: true }),
    /** The agent's inventory epoch and last applied seq: a gap or a new epoch asks for a resync. */
    epoch: text('epoch'),
    lastSeq: bigint('last_seq', { mode: 'number' }),
    /** The whole core Host object, for display; the columns above are what queries filter on. */
    host: jsonb('host').$type<Host>(),
    problems: jsonb('problems').$type<Problem[]>().notNull().default([]),
    /** The version the agent reported in its last hello (null: never connected since 0002). */
    agentVersion: text('agent_version'),
    /**
     * Whether the agent said at its last hello that it runs jobs (`--allow-rebind`); null: an
     * agent that predates the field, or never connected since 0007. Only true queues jobs.
     */
    allowRebind: boolean('allow_rebind'),
    /**
     * sha256 of the assessed inventory last stored (devices, groups, host facts, problems): a resent
     * snapshot with the same hash skips every device, group and label write.
     */
    inventoryHash: text('inventory_hash'),
    /**
     * Hash of the last stored snapshot as the agent sent it, salted per server process: a resend
     * with the same hash is acknowledged without being validated or assessed again (ingest.ts).
     */
    rawInventoryHash: text('raw_inventory_hash'),
    ...timestamps,
  },
  (t) => [
    check('hosts_state_check', oneOf(t.state, HOST_STATES)),
    index('hosts_state_idx').on(t.state),
    index('hosts_hostname_idx').on(t.hostname),
  ],
);

export const hostLabels = pgTable(
  'host_labels',
  {
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    key: text('key').notNull(),
    value: text('value').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.hostId, t.key] }),
    // "hosts with label Y": bulk jobs and capacity filters look hosts up by label.
    index('host_labels_key_value_idx').on(t.key, t.value),
  ],
);

/** core's readiness statuses: the check constraint follows them through a migration. */
export const DEVICE_STATUSES = READINESS_STATUSES;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

export const devices = pgTable(
  'devices',
  {
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    address: text('address').notNull(),
    vendorId: text('vendor_id').notNull(),
    deviceId: text('device_id').notNull(),
    subsystemVendorId: text('subsystem_vendor_id'),
    subsystemDeviceId: text('subsystem_device_id'),
    classCode: text('class_code').notNull(),
    revision: text('revision'),
    driver: text('driver'),
    driverModule: text('driver_module'),
    driverOverride: text('driver_override'),
    iommuGroup: integer('iommu_group'),
    numaNode: integer('numa_node'),
    kind: text('kind').notNull(),
    parent: text('parent'),
    physfn: text('physfn'),
    sriovTotalVfs: integer('sriov_total_vfs'),
    sriovNumVfs: integer('sriov_num_vfs'),
    vendorName: text('vendor_name'),
    deviceName: text('device_name'),
    className: text('class_name'),
    vfioModule: text('vfio_module'),
    vfioDriver: text('vfio_driver'),
    /** Readiness as core assessed it at ingest, stored so fleet aggregates are plain SQL. */
    status: text('status', { enum: DEVICE_STATUSES }).notNull(),
    reasonCodes: text('reason_codes').array().notNull().default(sql`'{}'::text[]`),
    /** The first (most severe) reason's code: "top blocking reasons" groups by it. */
    firstReason: text('first_reason'),
    reasons: jsonb('reasons').$type<Device['readiness']['reasons']>().notNull().default([]),
    /** The full core Device, for display; also the change detector of bulkUpsertDevices. */
    facts: jsonb('facts').$type<Device>().notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.hostId, t.address] }),
    check('devices_status_check', oneOf(t.status, DEVICE_STATUSES)),
    index('devices_status_idx').on(t.status),
    index('devices_vendor_device_idx').on(t.vendorId, t.deviceId),
    index('devices_host_group_idx').on(t.hostId, t.iommuGroup),
    index('devices_driver_idx').on(t.driver),
  ],
);

/**
 * Per-host rollups of the devices table, rewritten by syncHostRollups (rollups.ts) inside each
 * ingest transaction. The dashboard polls fleet.summary and fleet.capacity every few seconds per
 * open browser; at 5,000 hosts x 200 devices those would count 1M rows each time, while these
 * hold a few rows per host (one per device type and NUMA node; one per blocking reason), so the
 * fleet-wide aggregates read ~50,000 rows instead. Every figure is additive (counts, sums, min,
 * max), so summing the hosts' rows gives exactly what the aggregate over devices gave.
 */
export const hostDeviceStats = pgTable(
  'host_device_stats',
  {
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    vendorId: text('vendor_id').notNull(),
    deviceId: text('device_id').notNull(),
    numaNode: integer('numa_node'),
    /** max() over the host's rows of the type, so max() over hosts is the fleet's max(). */
    vendorName: text('vendor_name'),
    deviceName: text('device_name'),
    className: text('class_name'),
    /**
     * 1 on exactly one of the host's rows of this vendor:device (its lowest NUMA node), else 0:
     * summed, the hosts having the type, without a count(DISTINCT host_id) that must sort.
     */
    typeHosts: integer('type_hosts').notNull(),
    total: integer('total').notNull(),
    /** status = 'bound' (summary's figure). */
    statusBound: integer('status_bound').notNull(),
    /** Bound to a vfio driver, whatever the readiness (capacity's figure; see boundToVfioSql). */
    vfioBound: integer('vfio_bound').notNull(),
    ready: integer('ready').notNull(),
    blocked: integer('blocked').notNull(),
    vfHeadroom: integer('vf_headroom').notNull(),
  },
  (t) => [
    // NULLS NOT DISTINCT: a device without a NUMA node is one group, as in GROUP BY, and the
    // rollup's upsert can name this constraint as its conflict target.
    unique('host_device_stats_key')
      .on(t.hostId, t.vendorId, t.deviceId, t.numaNode)
      .nullsNotDistinct(),
  ],
);

/** Per host and first (most severe) reason code, the blocked devices: summary's top reasons. */
export const hostBlockingReasons = pgTable(
  'host_blocking_reasons',
  {
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    reason: text('reason').notNull(),
    count: integer('count').notNull(),
    /**
     * The smallest [message, remedy] pair of the reason's first entries on this host (min over
     * text arrays, in the database's collation): min over hosts of these is the fleet's sample.
     */
    message: text('message'),
    remedy: text('remedy'),
  },
  (t) => [primaryKey({ columns: [t.hostId, t.reason] })],
);

export const iommuGroups = pgTable(
  'iommu_groups',
  {
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    groupId: integer('group_id').notNull(),
    devices: text('devices').array().notNull().default(sql`'{}'::text[]`),
  },
  (t) => [primaryKey({ columns: [t.hostId, t.groupId] })],
);

export const enrollmentTokens = pgTable(
  'enrollment_tokens',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** Only a hash is stored: a database dump must not enroll agents. */
    tokenHash: text('token_hash').notNull().unique(),
    label: text('label'),
    createdBy: uuid('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    uses: integer('uses').notNull().default(0),
    /** Null: unlimited until it expires. */
    maxUses: integer('max_uses'),
  },
  (t) => [
    check('enrollment_tokens_uses_check', sql`${t.uses} >= 0`),
    check(
      'enrollment_tokens_max_uses_check',
      sql`${t.maxUses} IS NULL OR (${t.maxUses} > 0 AND ${t.uses} <= ${t.maxUses})`,
    ),
  ],
);

export const agentCredentials = pgTable(
  'agent_credentials',
  {
    agentId: text('agent_id').primaryKey(),
    // Not a foreign key to hosts.agent_id's row on purpose: a credential is issued at enrollment,
    // before the first hello creates the host row. It references hosts.id once that exists.
    hostId: uuid('host_id').references(() => hosts.id, { onDelete: 'set null' }),
    secretHash: text('secret_hash').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
    lastUsedAt: timestamp('last_used_at', { withTimezone: true }),
  },
  (t) => [index('agent_credentials_host_idx').on(t.hostId)],
);

export const USER_ROLES = ['viewer', 'operator', 'admin'] as const;
export type UserRole = (typeof USER_ROLES)[number];

export const users = pgTable(
  'users',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    username: text('username').notNull().unique(),
    passwordHash: text('password_hash').notNull(),
    role: text('role', { enum: USER_ROLES }).notNull().default('viewer'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    disabledAt: timestamp('disabled_at', { withTimezone: true }),
  },
  (t) => [check('users_role_check', oneOf(t.role, USER_ROLES))],
);

export const sessions = pgTable(
  'sessions',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    tokenHash: text('token_hash').notNull().unique(),
    userId: uuid('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [index('sessions_user_idx').on(t.userId)],
);

export const JOB_TARGETS = ['vfio', 'host'] as const;
export type JobTarget = (typeof JOB_TARGETS)[number];

export const JOB_STATES = [
  'queued',
  'dispatched',
  'running',
  'succeeded',
  'failed',
  'rolled_back',
  'cancelled',
  'expired',
] as const;
export type JobState = (typeof JOB_STATES)[number];

/** States in which a job holds its IOMMU group: at most one such job per group. */
export const ACTIVE_JOB_STATES = [
  'queued',
  'dispatched',
  'running',
] as const satisfies readonly JobState[];

export const jobs = pgTable(
  'jobs',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    hostId: uuid('host_id')
      .notNull()
      .references(() => hosts.id, { onDelete: 'cascade' }),
    iommuGroup: integer('iommu_group').notNull(),
    /** The device the operator picked; the job moves its whole group. */
    address: text('address').notNull(),
    target: text('target', { enum: JOB_TARGETS }).notNull(),
    force: boolean('force').notNull().default(false),
    /** A move to vfio the agent keeps across reboots (re-applied at its start). */
    persist: boolean('persist').notNull().default(false),
    state: text('state', { enum: JOB_STATES }).notNull().default('queued'),
    /** The plan preview (steps, blast radius, warnings) the operator acknowledged. */
    preview: jsonb('preview'),
    result: jsonb('result'),
    createdBy: uuid('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    deadline: timestamp('deadline', { withTimezone: true }).notNull(),
    /** While dispatched/running: the server holding it must renew before this or it is re-delivered. */
    leaseUntil: timestamp('lease_until', { withTimezone: true }),
    dispatchedAt: timestamp('dispatched_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
    /** The agent's job-accepted: from here the job may have written to sysfs. */
    acceptedAt: timestamp('accepted_at', { withTimezone: true }),
    /** An operator asked to cancel a job already handed to its agent (the agent decides). */
    cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
    /** The server process that delivered it last (its instance id), for logs and leases. */
    leaseOwner: text('lease_owner'),
    /** Why the job ended as it did (a stable code and a sentence), for lists without the result. */
    reasonCode: text('reason_code'),
    reasonMessage: text('reason_message'),
    /** Hash of the preview the operator acknowledged: creating needs the current one. */
    previewHash: text('preview_hash'),
    attempt: integer('attempt').notNull().default(0),
    /** Canary bulk runs: the canary job this one waits for. */
    canaryOf: uuid('canary_of').references((): AnyPgColumn => jobs.id, { onDelete: 'set null' }),
    bulkId: uuid('bulk_id'),
  },
  (t) => [
    check('jobs_state_check', oneOf(t.state, JOB_STATES)),
    check('jobs_target_check', oneOf(t.target, JOB_TARGETS)),
    // "At most one active job per IOMMU group", enforced by the database so two server processes
    // racing to create jobs cannot both win.
    uniqueIndex('jobs_one_active_per_group_idx')
      .on(t.hostId, t.iommuGroup)
      .where(oneOf(t.state, ACTIVE_JOB_STATES)),
    index('jobs_state_deadline_idx').on(t.state, t.deadline),
    index('jobs_host_state_idx').on(t.hostId, t.state),
    index('jobs_bulk_idx').on(t.bulkId),
    index('jobs_created_at_idx').on(t.createdAt),
    index('jobs_canary_of_idx').on(t.canaryOf),
  ],
);

export const jobEvents = pgTable(
  'job_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    jobId: uuid('job_id')
      .notNull()
      .references(() => jobs.id, { onDelete: 'cascade' }),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    fromState: text('from_state'),
    toState: text('to_state').notNull(),
    message: text('message'),
    data: jsonb('data'),
  },
  (t) => [index('job_events_job_idx').on(t.jobId, t.id)],
);

export const auditLog = pgTable(
  'audit_log',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    // No foreign keys here: the audit trail must outlive the users and hosts it mentions, so it
    // keeps their ids and the username as they were.
    userId: uuid('user_id'),
    username: text('username'),
    action: text('action').notNull(),
    hostId: uuid('host_id'),
    iommuGroup: integer('iommu_group'),
    address: text('address'),
    detail: jsonb('detail'),
  },
  (t) => [index('audit_log_at_idx').on(t.at), index('audit_log_host_idx').on(t.hostId, t.at)],
);

export type HostRow = typeof hosts.$inferSelect;
export type NewHostRow = typeof hosts.$inferInsert;
export type DeviceRow = typeof devices.$inferSelect;
export type NewDeviceRow = typeof devices.$inferInsert;
export type IommuGroupRow = typeof iommuGroups.$inferSelect;
export type HostDeviceStatsRow = typeof hostDeviceStats.$inferSelect;
export type HostBlockingReasonRow = typeof hostBlockingReasons.$inferSelect;
export type EnrollmentTokenRow = typeof enrollmentTokens.$inferSelect;
export type AgentCredentialRow = typeof agentCredentials.$inferSelect;
export type UserRow = typeof users.$inferSelect;
export type SessionRow = typeof sessions.$inferSelect;
export type JobRow = typeof jobs.$inferSelect;
export type NewJobRow = typeof jobs.$inferInsert;
export type JobEventRow = typeof jobEvents.$inferSelect;
export type AuditLogRow = typeof auditLog.$inferSelect;
