export { createApiHandler, defaultLoginLimiters, TRPC_PATH } from './api/http-handler';
export { type AppRouter, appRouter } from './api/root';
export type { ApiContext, ApiDeps, JobNotifier, LoginLimiters } from './api/trpc';
export {
  AUDIT_ACTIONS,
  type AuditAction,
  type AuditEntry,
  type AuditView,
  listAudit,
  recordAudit,
} from './audit/audit-log';
export { ensureAdmin } from './auth/bootstrap-admin';
export { hashPassword, verifyPassword } from './auth/passwords';
export { SlidingWindowLimiter } from './auth/rate-limit';
export { createSession, SESSION_COOKIE } from './auth/sessions';
export { parseServerEnv, type ServerEnv, serverEnvSchema } from './env';
export { ServerError, type ServerErrorCode } from './errors';
export {
  fleetCapacity,
  fleetSummary,
  getGroup,
  getHost,
  listHosts,
  searchDevices,
} from './fleet';
export { AgentGateway, type AgentGatewayDeps } from './gateway/agent-gateway';
export { createEnrollmentToken, hashSecret, revokeCredential } from './gateway/credentials';
export {
  type DeltaOutcome,
  type IngestResult,
  ingestDelta,
  ingestSnapshot,
} from './gateway/ingest';
export {
  type Actor,
  type BulkEntry,
  type BulkPreview,
  type BulkResult,
  cancelJob,
  createBulk,
  createJob,
  getJob,
  type JobEventView,
  type JobPreview,
  type JobView,
  listJobs,
  previewBulk,
  previewJob,
} from './jobs/job-service';
export {
  afterJobTerminal,
  recordJobEvent,
  TERMINAL_JOB_STATES,
  terminalStateOf,
  transitionJob,
} from './jobs/transitions';
export { createLogger, type Logger } from './logger';
export { createNextHandler, hasNextBuild, type NextApp, type NextHandler } from './next-handler';
export {
  type Health,
  health,
  type RunningServer,
  type StartServerOptions,
  startServer,
} from './server';
