export { DirectoryLockedError, type DirectoryLockOptions, lockDirectory } from './dir-lock';
export {
  describeOwner,
  type HeldLock,
  type LockAttempt,
  type LockInfo,
  type LockOptions,
  type LockOwner,
  readLock,
  tryLock,
} from './lock-file';
export { makePrivate } from './private-tree';
export {
  errnoOf,
  identityOf,
  type Liveness,
  liveness,
  type ProcessIdentity,
  processAlive,
  processStartTime,
} from './process-identity';
