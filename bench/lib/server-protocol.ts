// The IPC between a bench and its server child (server-child.ts): requests carry an id, replies
// echo it. Plain data only (Node's IPC serializes with JSON).

export interface JobSpec {
  hostname: string;
  address: string;
}

export type ChildRequest =
  | { id: number; cmd: 'stats'; reset?: boolean }
  | { id: number; cmd: 'token' }
  | { id: number; cmd: 'reset-fleet' }
  | { id: number; cmd: 'reset-inventory' }
  | { id: number; cmd: 'vacuum-analyze-if-no-autovacuum' }
  | { id: number; cmd: 'count'; since?: string }
  | { id: number; cmd: 'session' }
  | { id: number; cmd: 'create-jobs'; jobs: JobSpec[] }
  | { id: number; cmd: 'job-stats'; ids: string[] };

export type ChildReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: string };

export interface ChildStats {
  rssBytes: number;
  heapUsedBytes: number;
  /** Buffers and ArrayBuffers outside the V8 heap (socket buffers among them). */
  externalBytes: number;
  loopDelayP50Ms: number;
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
  /** CPU time over wall time since the last reset (1.0 = one core busy). */
  cpuShare: number;
  /** Agents past hello. */
  connected: number;
}

export interface JobStatRow {
  id: string;
  state: string;
  attempt: number;
  dispatchMs: number | null;
  acceptMs: number | null;
  finishMs: number | null;
  results: number;
}
