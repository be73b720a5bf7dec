export { parseServerEnv, type ServerEnv, serverEnvSchema } from './env';
export { ServerError, type ServerErrorCode } from './errors';
export { AgentGateway, type AgentGatewayDeps } from './gateway/agent-gateway';
export { createEnrollmentToken, hashSecret, revokeCredential } from './gateway/credentials';
export {
  type DeltaOutcome,
  type IngestResult,
  ingestDelta,
  ingestSnapshot,
} from './gateway/ingest';
export { createLogger, type Logger } from './logger';
export {
  type Health,
  health,
  type RunningServer,
  type StartServerOptions,
  startServer,
} from './server';
