/**
 * The agent↔server wire protocol, version 1: one WebSocket per agent, one JSON object per text
 * frame, a discriminated union on `type` in each direction. docs/protocol.md describes the session;
 * this file is its contract.
 *
 * Both ends parse what the other sends with these schemas, and neither trusts the other: the server
 * faces every host on the network (and anything that reaches its port), the agent runs as root and
 * acts on jobs. So every string and array is bounded, sizes are checked before JSON.parse, and
 * parsing never throws: a hostile frame becomes an error value naming the field and the problem.
 *
 * Objects are not strict: unknown fields are dropped, so a v1 peer may add an optional field
 * without breaking older peers. Anything incompatible bumps PROTOCOL_VERSION.
 */
import { z } from 'zod';
import { kernelNameSchema, pciAddressSchema } from '../inventory/schema';
import { planPreconditionSchema, planStepSchema, rebindTargetSchema } from '../plan/schema';
import { snapshotDeltaSchema } from './delta';
import {
  MAX_WIRE_REASONS,
  MAX_WIRE_TEXT,
  refuseBadGroupListing,
  wireHostFactsSnapshotSchema,
  wireHostSnapshotSchema,
  wireReadinessReasonSchema,
} from './wire-inventory';

export * from './wire-inventory';

export const PROTOCOL_VERSION = 1 as const;

/** Snapshots and deltas: a full inventory of a large host is well under a megabyte. */
export const MAX_SNAPSHOT_MESSAGE_BYTES = 8 * 1024 * 1024;
/** Every other message. */
export const MAX_CONTROL_MESSAGE_BYTES = 64 * 1024;
/**
 * Steps of one phase (forward or rollback) a job reports; a plan has about four per device, so
 * this covers a 127-device group. An agent refuses a job whose plan has more (`plan-too-large`).
 */
export const MAX_JOB_STEPS = 512;
/** Labels on one agent. */
export const MAX_LABELS = 64;
/** Bound on `error.message` in a ParsedMessage failure, so a log line stays a line. */
export const MAX_PARSE_ERROR_CHARS = 500;

// --- shared field schemas -------------------------------------------------------------------

/** Identifiers the server mints (agent ids, job ids, epochs, nonces): uuids and similar. */
const idSchema = z
  .string()
  .max(64)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$/, 'expected an id: letters, digits, _ . : -');
/** Secrets and enrollment tokens: base64, base64url or hex. */
const secretSchema = z
  .string()
  .min(16)
  .max(512)
  .regex(/^[A-Za-z0-9+/=_.~-]+$/, 'expected a base64, base64url or hex token');
/** ISO 8601 with a zone (`Date#toISOString()` writes one). */
const timestampSchema = z.iso.datetime({ offset: true }).max(64);
const seqSchema = z.number().int().nonnegative();
const protocolVersionSchema = z.number().int().positive().max(1_000_000);
/** Stable machine-readable codes (`auth-failed`, `precondition-drift`...): UIs key on them. */
const codeSchema = z
  .string()
  .max(64)
  .regex(/^[a-z0-9][a-z0-9-]*$/, 'expected a code: lowercase letters, digits, -');
const messageTextSchema = z.string().max(MAX_WIRE_TEXT);

/**
 * Label keys like `rack`, `cluster`, `example.com/tier`. zod never copies a `__proto__` key into
 * its output, and names of Object.prototype members (`constructor`, `toString`...) and `prototype`
 * are refused, so code that looks labels up in a plain object never meets an inherited member.
 */
const labelKeySchema = z
  .string()
  .max(63)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_./-]*$/, 'expected a label key: letters, digits, _ . / -')
  .refine(
    (key) => !(key in Object.prototype) && key !== 'prototype',
    'reserved label key (an Object.prototype member)',
  );
const labelsSchema = z
  .record(labelKeySchema, z.string().max(256))
  .refine((labels) => Object.keys(labels).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`);

/** errno name from the kernel (`EBUSY`...; `EUNKNOWN` when unmapped) and what the agent saw. */
export const kernelErrorSchema = z.object({
  errno: z
    .string()
    .max(32)
    .regex(/^E[A-Z0-9]+$/, 'expected an errno name such as EBUSY'),
  message: messageTextSchema,
});
export type KernelError = z.infer<typeof kernelErrorSchema>;

export const jobPhaseSchema = z.enum(['forward', 'rollback']);
export type JobPhase = z.infer<typeof jobPhaseSchema>;

// --- messages both directions send ----------------------------------------------------------

/** Liveness: the receiver answers with a `pong` carrying the same nonce. */
export const pingMessageSchema = z.object({
  type: z.literal('ping'),
  nonce: idSchema,
  sentAt: timestampSchema,
});
export type PingMessage = z.infer<typeof pingMessageSchema>;

export const pongMessageSchema = z.object({ type: z.literal('pong'), nonce: idSchema });
export type PongMessage = z.infer<typeof pongMessageSchema>;

// --- agent → server -------------------------------------------------------------------------

export const agentAuthSchema = z.discriminatedUnion('kind', [
  /** An enrolled agent: the credential it got in `welcome`. */
  z.object({ kind: z.literal('credential'), agentId: idSchema, secret: secretSchema }),
  /** First contact: a one-time enrollment token an operator issued. */
  z.object({ kind: z.literal('enroll'), token: secretSchema }),
]);
export type AgentAuth = z.infer<typeof agentAuthSchema>;

export const helloMessageSchema = z.object({
  type: z.literal('hello'),
  /** Any positive integer parses, so a server can answer a newer agent with a clear error. */
  protocolVersion: protocolVersionSchema,
  agentVersion: z.string().min(1).max(64),
  host: z.object({
    hostname: z.string().min(1).max(253),
    machineId: z.string().max(128).nullable(),
    kernelRelease: z.string().max(256).nullable(),
  }),
  auth: agentAuthSchema,
  labels: labelsSchema,
  /** Where the agent's stream stands, so the server can take deltas from there; null: fresh start. */
  resume: z.object({ epoch: idSchema, lastAckedSeq: seqSchema }).nullable(),
  /**
   * Whether the agent runs jobs (`--allow-rebind`). Agents that predate the field do not say:
   * null, which the server treats as read-only (it cannot know that a job would run).
   */
  allowRebind: z.boolean().nullable().default(null),
});
export type HelloMessage = z.infer<typeof helloMessageSchema>;

/**
 * Deltas key devices by address: a snapshot with a duplicate could not be diffed or patched. Its
 * group listing is checked too (refuseBadGroupListing).
 */
function refuseDuplicateAddresses(
  m: {
    snapshot: {
      devices: readonly { address: string }[];
      groups: readonly { id: number; devices: readonly string[] }[];
    };
  },
  ctx: z.core.$RefinementCtx,
): void {
  refuseBadGroupListing(m.snapshot.groups, ctx, ['snapshot', 'groups']);
  const seen = new Set<string>();
  m.snapshot.devices.forEach((device, index) => {
    if (seen.has(device.address)) {
      ctx.addIssue({
        code: 'custom',
        path: ['snapshot', 'devices', index, 'address'],
        message: `${device.address} appears more than once`,
      });
    }
    seen.add(device.address);
  });
}

export const snapshotMessageSchema = z
  .object({
    type: z.literal('snapshot'),
    epoch: idSchema,
    seq: seqSchema,
    snapshot: wireHostSnapshotSchema,
  })
  .superRefine(refuseDuplicateAddresses);
export type SnapshotMessage = z.infer<typeof snapshotMessageSchema>;

/**
 * A snapshot message as the server parses it: the devices' `readiness` is dropped without being
 * validated, because the server discards the agent's verdicts and assesses the facts itself. Every
 * reason's code, text and related addresses is a third to nearly half of validating a 200-device
 * snapshot, spent on data thrown away. Everything the server keeps is validated as strictly.
 */
export const factsSnapshotMessageSchema = z
  .object({
    type: z.literal('snapshot'),
    epoch: idSchema,
    seq: seqSchema,
    snapshot: wireHostFactsSnapshotSchema,
  })
  .superRefine(refuseDuplicateAddresses);
export type FactsSnapshotMessage = z.infer<typeof factsSnapshotMessageSchema>;

export const deltaMessageSchema = z
  .object({
    type: z.literal('delta'),
    epoch: idSchema,
    /**
     * The seq of the state this delta applies to: the newest one the server acknowledged, not the
     * last one sent, so a delta never depends on another still in flight.
     */
    baseSeq: seqSchema,
    seq: seqSchema,
    delta: snapshotDeltaSchema,
  })
  .refine((m) => m.seq > m.baseSeq, { path: ['seq'], message: 'seq must be greater than baseSeq' });
export type DeltaMessage = z.infer<typeof deltaMessageSchema>;

export const jobAcceptedMessageSchema = z.object({
  type: z.literal('job-accepted'),
  jobId: idSchema,
});
export type JobAcceptedMessage = z.infer<typeof jobAcceptedMessageSchema>;

export const jobStepMessageSchema = z.object({
  type: z.literal('job-step'),
  jobId: idSchema,
  phase: jobPhaseSchema,
  /** 0-based index of the step in its phase. */
  index: z
    .number()
    .int()
    .nonnegative()
    .max(MAX_JOB_STEPS - 1),
  step: planStepSchema,
  status: z.enum(['ok', 'failed', 'skipped']),
  startedAt: timestampSchema,
  durationMs: z.number().nonnegative().max(86_400_000),
  /** The kernel's answer when `status` is `failed`; null otherwise. */
  error: kernelErrorSchema.nullable(),
});
export type JobStepMessage = z.infer<typeof jobStepMessageSchema>;

export const jobStatusSchema = z.enum(['succeeded', 'failed', 'rolled_back', 'refused']);
export type JobStatus = z.infer<typeof jobStatusSchema>;

/** As many as a plan may act on (rebindPlanSchema's bound): the devices of one IOMMU group. */
export const MAX_JOB_DEVICES = 256;
const driverStatesSchema = z.array(planPreconditionSchema).max(MAX_JOB_DEVICES);

/**
 * A succeeded move to vfio asked to persist records its devices; a succeeded restore forgets them.
 * `error`: the binding changed but bindings.json could not be written (the job still succeeded).
 */
const keptBindingSchema = z.object({ address: pciAddressSchema, driver: kernelNameSchema });
export const jobPersistenceSchema = z.object({
  kept: z.array(keptBindingSchema).max(MAX_JOB_DEVICES),
  forgotten: z.array(keptBindingSchema).max(MAX_JOB_DEVICES),
  error: messageTextSchema.nullable(),
});
export type JobPersistence = z.infer<typeof jobPersistenceSchema>;

export const jobResultMessageSchema = z
  .object({
    type: z.literal('job-result'),
    jobId: idSchema,
    /**
     * `succeeded`: every forward step ran and verified. `rolled_back`: a forward step failed and the
     * rollback restored every device. `failed`: the rollback failed too (the host is in between).
     * `refused`: nothing was written (not ready, drifted, deadline passed, cancelled, busy).
     */
    status: jobStatusSchema,
    /** Why it was refused or failed, with the readiness reasons when those are the cause. */
    reason: z
      .object({
        code: codeSchema,
        message: messageTextSchema,
        reasons: z.array(wireReadinessReasonSchema).max(MAX_WIRE_REASONS),
      })
      .nullable(),
    /** The first step that failed. */
    failedStep: z
      .object({
        phase: jobPhaseSchema,
        index: z
          .number()
          .int()
          .nonnegative()
          .max(MAX_JOB_STEPS - 1),
        step: planStepSchema,
      })
      .nullable(),
    kernelError: kernelErrorSchema.nullable(),
    /** Driver and driver_override of every device the job touched, before and after. */
    before: driverStatesSchema,
    after: driverStatesSchema,
    /** What the job changed in the agent's persisted bindings; null from agents that predate it. */
    persistence: jobPersistenceSchema.nullable().default(null),
    startedAt: timestampSchema,
    finishedAt: timestampSchema,
  })
  .superRefine((m, ctx) => {
    // A result that contradicts its own status would mislead the operator reading it.
    if (m.status === 'succeeded') {
      for (const field of ['reason', 'failedStep', 'kernelError'] as const) {
        if (m[field] !== null) {
          ctx.addIssue({ code: 'custom', path: [field], message: 'must be null when succeeded' });
        }
      }
    }
    if (m.status === 'refused') {
      if (m.reason === null) {
        ctx.addIssue({ code: 'custom', path: ['reason'], message: 'a refusal needs a reason' });
      }
      if (m.failedStep !== null) {
        ctx.addIssue({
          code: 'custom',
          path: ['failedStep'],
          message: 'a refused job ran no step',
        });
      }
    }
  });
export type JobResultMessage = z.infer<typeof jobResultMessageSchema>;

export const agentMessageSchema = z.discriminatedUnion('type', [
  helloMessageSchema,
  snapshotMessageSchema,
  deltaMessageSchema,
  pingMessageSchema,
  pongMessageSchema,
  jobAcceptedMessageSchema,
  jobStepMessageSchema,
  jobResultMessageSchema,
]);
export type AgentMessage = z.infer<typeof agentMessageSchema>;
export type AgentMessageType = AgentMessage['type'];

/** What an agent sends, as the server parses it: snapshots without readiness (see above). */
export const agentMessageForServerSchema = z.discriminatedUnion('type', [
  helloMessageSchema,
  factsSnapshotMessageSchema,
  deltaMessageSchema,
  pingMessageSchema,
  pongMessageSchema,
  jobAcceptedMessageSchema,
  jobStepMessageSchema,
  jobResultMessageSchema,
]);
export type AgentMessageForServer = z.infer<typeof agentMessageForServerSchema>;

// --- server → agent -------------------------------------------------------------------------

export const welcomeMessageSchema = z
  .object({
    type: z.literal('welcome'),
    protocolVersion: protocolVersionSchema,
    agentId: idSchema,
    /** Only right after enrollment: the agent stores it and authenticates with it from then on. */
    credential: z.object({ agentId: idSchema, secret: secretSchema }).nullable(),
    /** `ok`: the server has the hello's epoch at lastAckedSeq, send deltas from it; `snapshot`: send a full one. */
    resume: z.enum(['ok', 'snapshot']),
    heartbeatSeconds: z.number().int().min(1).max(3600),
  })
  .refine((m) => m.credential === null || m.credential.agentId === m.agentId, {
    path: ['credential', 'agentId'],
    message: 'the credential must be for the agent being welcomed',
  });
export type WelcomeMessage = z.infer<typeof welcomeMessageSchema>;

/** Cumulative: every snapshot and delta of `epoch` up to `seq` is applied. */
export const ackMessageSchema = z.object({
  type: z.literal('ack'),
  epoch: idSchema,
  seq: seqSchema,
});
export type AckMessage = z.infer<typeof ackMessageSchema>;

/** The server cannot apply what it got (unknown base, misfit delta): the agent sends a full snapshot. */
export const resyncMessageSchema = z.object({
  type: z.literal('resync'),
  reason: messageTextSchema,
});
export type ResyncMessage = z.infer<typeof resyncMessageSchema>;

export const jobMessageSchema = z.object({
  type: z.literal('job'),
  /** Idempotency key: a re-delivered id gets the stored result, never a second run. */
  jobId: idSchema,
  /** The device asked for; the agent plans its whole IOMMU group from its own fresh read. */
  address: pciAddressSchema,
  target: rebindTargetSchema,
  /** Go ahead despite warnings (never despite a blocking reason). */
  force: z.boolean(),
  /**
   * Keep a move to vfio across reboots (the agent re-applies it at start, as `bind --persist`).
   * A restore always forgets. Absent from servers that predate it: not kept.
   */
  persist: z.boolean().default(false),
  /** The agent refuses a job it receives or would start after this. */
  deadline: timestampSchema,
});
export type JobMessage = z.infer<typeof jobMessageSchema>;

export const jobCancelMessageSchema = z.object({ type: z.literal('job-cancel'), jobId: idSchema });
export type JobCancelMessage = z.infer<typeof jobCancelMessageSchema>;

/**
 * The codes this server sends in `error`. The schema takes any code, so a newer server can add
 * one; an agent treats an unknown code by its `fatal` flag.
 */
export const KNOWN_ERROR_CODES = {
  /** hello.protocolVersion is not one the server speaks (fatal). */
  unsupportedProtocol: 'unsupported-protocol',
  /** The credential or enrollment token was rejected (fatal: retrying unchanged cannot help). */
  authFailed: 'auth-failed',
  /** The first message was not a hello, or a message came that the session state does not allow. */
  protocolViolation: 'protocol-violation',
  /** A frame failed parseAgentMessage (its ParsedMessage error is the message). */
  invalidMessage: 'invalid-message',
  /** The server failed; the agent reconnects with backoff. */
  internal: 'internal',
  /**
   * Over a rate limit: fatal for a connection over its frame rate for too long; not fatal for a
   * hello refused unverified after too many failed hellos from its address (the agent redials).
   */
  rateLimited: 'rate-limited',
} as const;

export const errorMessageSchema = z.object({
  type: z.literal('error'),
  code: codeSchema,
  message: messageTextSchema,
  /** The server closes the connection after a fatal error; the agent must not retry unchanged. */
  fatal: z.boolean(),
});
export type ErrorMessage = z.infer<typeof errorMessageSchema>;

export const serverMessageSchema = z.discriminatedUnion('type', [
  welcomeMessageSchema,
  ackMessageSchema,
  resyncMessageSchema,
  pingMessageSchema,
  pongMessageSchema,
  jobMessageSchema,
  jobCancelMessageSchema,
  errorMessageSchema,
]);
export type ServerMessage = z.infer<typeof serverMessageSchema>;
export type ServerMessageType = ServerMessage['type'];

// --- parsing --------------------------------------------------------------------------------

export type ParseFailureCode = 'too-large' | 'not-json' | 'invalid';
export type ParsedMessage<T> =
  | { ok: true; message: T }
  | { ok: false; error: { code: ParseFailureCode; message: string } };

/** The messages allowed up to MAX_SNAPSHOT_MESSAGE_BYTES; all others get MAX_CONTROL_MESSAGE_BYTES. */
const BULK_TYPES: ReadonlySet<unknown> = new Set(['snapshot', 'delta']);
const NO_BULK_TYPES: ReadonlySet<unknown> = new Set();

/**
 * UTF-8 length of `s`, or `limit + 1` as soon as it exceeds `limit`. Never encodes the string: a
 * hostile frame must be refused before anything proportional to its size is allocated.
 */
function utf8LengthUpTo(s: string, limit: number): number {
  // Every UTF-16 unit is at least one UTF-8 byte and at most three.
  if (s.length > limit) return limit + 1;
  if (s.length * 3 <= limit) return s.length;
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const unit = s.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
    if (bytes > limit) return limit + 1;
  }
  return bytes;
}

function fail<T>(code: ParseFailureCode, message: string): ParsedMessage<T> {
  const clipped =
    message.length > MAX_PARSE_ERROR_CHARS
      ? `${message.slice(0, MAX_PARSE_ERROR_CHARS - 1)}…`
      : message;
  return { ok: false, error: { code, message: clipped } };
}

/** `snapshot.devices[3].address` from a zod issue path. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else {
      const name = String(key);
      // Hostile keys are echoed clipped and quoted, never as if they were field names.
      out += /^[A-Za-z_$][A-Za-z0-9_$-]{0,63}$/.test(name)
        ? `${out === '' ? '' : '.'}${name}`
        : `[${JSON.stringify(name.slice(0, 64))}]`;
    }
  }
  return out === '' ? '(message)' : out;
}

function describeIssues(issues: readonly z.core.$ZodIssue[]): string {
  const shown = issues.slice(0, 3).map((issue) => {
    // zod reports a bad record key as "Invalid key in record"; the key schema's own issue says why.
    const inner = issue.code === 'invalid_key' ? issue.issues[0] : undefined;
    return `${formatPath(issue.path)}: ${inner?.message ?? issue.message}`;
  });
  const more = issues.length > 3 ? ` (and ${issues.length - 3} more)` : '';
  return `${shown.join('; ')}${more}`;
}

/** A frame that passed the size, UTF-8 and JSON checks: a JSON object not yet validated. */
interface DecodedFrame {
  value: object;
  /** Its size in bytes, for the per-type size bound that validation applies. */
  size: number;
}

function decodeFrame(
  raw: string | Uint8Array,
  maxBytes: number,
): { ok: true; frame: DecodedFrame } | { ok: false; error: ParsedMessage<never> } {
  const size = typeof raw === 'string' ? utf8LengthUpTo(raw, maxBytes) : raw.byteLength;
  if (size > maxBytes) {
    return { ok: false, error: fail('too-large', `message exceeds ${maxBytes} bytes`) };
  }
  let text: string;
  if (typeof raw === 'string') text = raw;
  else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      return { ok: false, error: fail('not-json', 'message is not valid UTF-8') };
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return {
      ok: false,
      error: fail(
        'not-json',
        `message is not JSON: ${err instanceof Error ? err.message : 'parse error'}`,
      ),
    };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: fail('invalid', '(message): expected a JSON object') };
  }
  return { ok: true, frame: { value, size } };
}

function validateFrame<T>(
  schema: z.ZodType<T>,
  { value, size }: DecodedFrame,
  bulkTypes: ReadonlySet<unknown>,
): ParsedMessage<T> {
  const type: unknown = (value as { type?: unknown }).type;
  if (size > MAX_CONTROL_MESSAGE_BYTES && !bulkTypes.has(type)) {
    return fail(
      'too-large',
      `a ${typeof type === 'string' ? JSON.stringify(type.slice(0, 32)) : 'control'} message exceeds ${MAX_CONTROL_MESSAGE_BYTES} bytes`,
    );
  }
  try {
    const result = schema.safeParse(value);
    if (result.success) return { ok: true, message: result.data };
    return fail('invalid', describeIssues(result.error.issues));
  } catch (err) {
    // safeParse does not throw on data; this guards a bug in a refinement from crashing a socket loop.
    return fail(
      'invalid',
      `message could not be validated: ${err instanceof Error ? err.message : 'error'}`,
    );
  }
}

function parseWith<T>(
  schema: z.ZodType<T>,
  raw: string | Uint8Array,
  maxBytes: number,
  bulkTypes: ReadonlySet<unknown>,
): ParsedMessage<T> {
  const decoded = decodeFrame(raw, maxBytes);
  return decoded.ok ? validateFrame(schema, decoded.frame, bulkTypes) : decoded.error;
}

/**
 * Parses one frame from an agent. Size is checked before anything else (a Node Buffer is a
 * Uint8Array): up to MAX_SNAPSHOT_MESSAGE_BYTES for `snapshot` and `delta`, MAX_CONTROL_MESSAGE_BYTES
 * for the rest. Never throws.
 */
export function parseAgentMessage(raw: string | Uint8Array): ParsedMessage<AgentMessage> {
  return parseWith(agentMessageSchema, raw, MAX_SNAPSHOT_MESSAGE_BYTES, BULK_TYPES);
}

/**
 * parseAgentMessage for the server: the same size checks (before JSON.parse) and the same schemas,
 * except that a snapshot's devices come back without `readiness`, unvalidated (the server
 * re-assesses). Deltas keep it: they carry a device or two, and applyDelta works on full devices.
 */
export function parseAgentMessageForServer(
  raw: string | Uint8Array,
): ParsedMessage<AgentMessageForServer> {
  return parseWith(agentMessageForServerSchema, raw, MAX_SNAPSHOT_MESSAGE_BYTES, BULK_TYPES);
}

/** Parses one frame from the server: every server message is a control message. Never throws. */
export function parseServerMessage(raw: string | Uint8Array): ParsedMessage<ServerMessage> {
  return parseWith(serverMessageSchema, raw, MAX_CONTROL_MESSAGE_BYTES, NO_BULK_TYPES);
}

/** One message as the text of one WebSocket frame. */
export function encodeMessage(message: AgentMessage | ServerMessage): string {
  return JSON.stringify(message);
}
