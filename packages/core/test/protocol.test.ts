import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Device, HostSnapshot } from '../src/inventory/schema';
import type { PlanStep } from '../src/plan/schema';
import {
  type AgentMessage,
  agentMessageSchema,
  encodeMessage,
  type JobResultMessage,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_PARSE_ERROR_CHARS,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  MAX_WIRE_DEVICES,
  type ParsedMessage,
  PROTOCOL_VERSION,
  parseAgentMessage,
  parseServerMessage,
  type ServerMessage,
  serverMessageSchema,
} from '../src/protocol/messages';

// ---------------------------------------------------------------------------------------------
// Builders: one valid message of every type.

function device(address: string): Device {
  return {
    address,
    vendorId: '8086',
    deviceId: '1572',
    subsystemVendorId: null,
    subsystemDeviceId: null,
    classCode: '020000',
    revision: null,
    modalias: null,
    driver: 'i40e',
    driverModule: 'i40e',
    driverOverride: null,
    iommuGroup: 1,
    numaNode: null,
    kind: 'endpoint',
    parent: null,
    sriov: null,
    physfn: null,
    resetMethods: ['flr'],
    resettable: true,
    bootVga: false,
    inUse: false,
    holder: null,
    keptBy: [],
    netInterfaces: ['eth0'],
    names: { vendor: null, device: null, subsystem: null, className: 'Ethernet controller' },
    vfio: null,
    vfioDriver: null,
    readiness: { status: 'ready', reasons: [] },
  };
}

function snapshot(): HostSnapshot {
  return {
    schemaVersion: 1,
    collectedAt: '2026-11-23T13:00:00.000Z',
    host: {
      hostname: 'h1',
      machineId: null,
      kernelRelease: '6.8.0',
      cpuVendor: 'intel',
      virtualMachine: false,
      cmdline: {
        intelIommu: 'on',
        amdIommu: null,
        iommu: 'pt',
        iommuPassthrough: null,
        pcieAcsOverride: null,
        vfioPciIds: [],
        raw: 'intel_iommu=on iommu=pt',
      },
      iommu: { enabled: true, units: ['dmar0'], groupCount: 1, interruptRemapping: 'enabled' },
      vfio: { modulesLoaded: [], devNodes: ['vfio'] },
      modulesAlias: { path: null, pciAliases: 0, vfioAliases: 0, malformedLines: 0 },
      pciIdsPath: null,
      critical: [],
    },
    devices: [device('0000:3b:00.0')],
    groups: [{ id: 1, devices: ['0000:3b:00.0'] }],
    problems: [],
  };
}

const T0 = '2026-11-23T13:00:00.000Z';
const T1 = '2026-11-23T13:00:01.250Z';
const GPU = '0000:3b:00.0';

const unbindStep: PlanStep = {
  action: 'unbind',
  address: GPU,
  driver: 'nvidia',
  path: '/sys/bus/pci/drivers/nvidia/unbind',
  value: GPU,
  description: `unbind ${GPU} from nvidia`,
};

const hello: AgentMessage = {
  type: 'hello',
  protocolVersion: PROTOCOL_VERSION,
  agentVersion: '0.1.0',
  host: {
    hostname: 'gpu-17.dc1',
    machineId: '3d1219c7c4c5404aaa1f6d2a48adfda4',
    kernelRelease: '6.8.0',
  },
  auth: { kind: 'credential', agentId: 'agt_7f3a', secret: 'c2VjcmV0LXNlY3JldC1zZWNyZXQ=' },
  labels: { rack: 'r12', cluster: 'train-a', 'example.com/tier': 'gold' },
  resume: { epoch: 'e-5b1c', lastAckedSeq: 41 },
  allowRebind: true,
};

const succeeded: JobResultMessage = {
  type: 'job-result',
  jobId: '0b6f8f1e-3c1a-4d8e-9a51-2f7e1c0d9a11',
  status: 'succeeded',
  reason: null,
  failedStep: null,
  kernelError: null,
  before: [{ address: GPU, driver: 'nvidia', driverOverride: null }],
  after: [{ address: GPU, driver: 'vfio-pci', driverOverride: 'vfio-pci' }],
  persistence: { kept: [{ address: GPU, driver: 'vfio-pci' }], forgotten: [], error: null },
  startedAt: T0,
  finishedAt: T1,
};

const agentMessages: AgentMessage[] = [
  hello,
  {
    ...hello,
    auth: { kind: 'enroll', token: 'enroll-0123456789abcdef' },
    labels: {},
    resume: null,
    host: { hostname: 'new-host', machineId: null, kernelRelease: null },
  },
  { type: 'snapshot', epoch: 'e-5b1c', seq: 0, snapshot: snapshot() },
  {
    type: 'delta',
    epoch: 'e-5b1c',
    baseSeq: 0,
    seq: 1,
    delta: {
      devicesAdded: [device('0000:3b:00.1')],
      devicesChanged: [{ ...device(GPU), driver: 'vfio-pci' }],
      devicesRemoved: ['0000:5e:00.0'],
      problems: [{ source: '/lib/modules', message: 'modules.alias not found' }],
    },
  },
  { type: 'ping', nonce: 'n-1', sentAt: T0 },
  { type: 'pong', nonce: 'n-1' },
  { type: 'job-accepted', jobId: succeeded.jobId },
  {
    type: 'job-step',
    jobId: succeeded.jobId,
    phase: 'forward',
    index: 2,
    step: unbindStep,
    status: 'failed',
    startedAt: T0,
    durationMs: 12.5,
    error: { errno: 'EBUSY', message: 'Device or resource busy' },
  },
  succeeded,
  {
    ...succeeded,
    status: 'rolled_back',
    reason: { code: 'step-failed', message: 'unbind failed; rolled back', reasons: [] },
    failedStep: { phase: 'forward', index: 2, step: unbindStep },
    kernelError: { errno: 'EBUSY', message: 'Device or resource busy' },
    after: succeeded.before,
  },
  {
    ...succeeded,
    status: 'refused',
    reason: {
      code: 'blocked',
      message: `${GPU} is blocked`,
      reasons: [
        {
          code: 'shared-group',
          severity: 'error',
          message: 'group 7 also holds 0000:3b:00.1',
          remedy: 'move both',
          related: ['0000:3b:00.1'],
        },
      ],
    },
    after: succeeded.before,
  },
];

const job: ServerMessage = {
  type: 'job',
  jobId: succeeded.jobId,
  address: GPU,
  target: 'vfio',
  force: false,
  persist: true,
  deadline: T1,
};

const serverMessages: ServerMessage[] = [
  {
    type: 'welcome',
    protocolVersion: PROTOCOL_VERSION,
    agentId: 'agt_7f3a',
    credential: { agentId: 'agt_7f3a', secret: 'c2VjcmV0LXNlY3JldC1zZWNyZXQ=' },
    resume: 'snapshot',
    heartbeatSeconds: 15,
  },
  {
    type: 'welcome',
    protocolVersion: PROTOCOL_VERSION,
    agentId: 'agt_7f3a',
    credential: null,
    resume: 'ok',
    heartbeatSeconds: 15,
  },
  { type: 'ack', epoch: 'e-5b1c', seq: 41 },
  { type: 'resync', reason: 'unknown epoch' },
  { type: 'ping', nonce: 'n-2', sentAt: '2026-11-23T14:00:00+01:00' },
  { type: 'pong', nonce: 'n-2' },
  job,
  { ...job, target: 'host', force: true, persist: false },
  { type: 'job-cancel', jobId: succeeded.jobId },
  { type: 'error', code: 'auth-failed', message: 'unknown agent', fatal: true },
];

/** The error of a failed parse; fails the test when the parse succeeded. */
function failure<T>(parsed: ParsedMessage<T>): { code: string; message: string } {
  if (parsed.ok) throw new Error(`expected a failure, got ${JSON.stringify(parsed.message)}`);
  return parsed.error;
}

function agentJson(value: unknown): ParsedMessage<AgentMessage> {
  return parseAgentMessage(JSON.stringify(value));
}

function typesOf(schema: typeof agentMessageSchema | typeof serverMessageSchema): string[] {
  return schema.options.map((option) => option.shape.type.value);
}
const agentMessageSchemaTypes = () => typesOf(agentMessageSchema);
const serverMessageSchemaTypes = () => typesOf(serverMessageSchema);

afterEach(() => {
  vi.restoreAllMocks();
});

// ---------------------------------------------------------------------------------------------

describe('round trip', () => {
  it('covers every message type in each direction', () => {
    expect(new Set(agentMessages.map((m) => m.type))).toEqual(new Set(agentMessageSchemaTypes()));
    expect(new Set(serverMessages.map((m) => m.type))).toEqual(new Set(serverMessageSchemaTypes()));
  });

  it.each(agentMessages.map((m, i) => [`${i}: ${m.type}`, m] as const))(
    'agent %s: encode → parse gives it back',
    (_, message) => {
      expect(parseAgentMessage(encodeMessage(message))).toEqual({ ok: true, message });
    },
  );

  it.each(serverMessages.map((m, i) => [`${i}: ${m.type}`, m] as const))(
    'server %s: encode → parse gives it back',
    (_, message) => {
      expect(parseServerMessage(encodeMessage(message))).toEqual({ ok: true, message });
    },
  );

  it('takes a Buffer (what ws delivers) as well as a string', () => {
    const buffer = Buffer.from(encodeMessage(job), 'utf8');
    expect(parseServerMessage(buffer)).toEqual({ ok: true, message: job });
  });

  it('drops unknown fields, so a v1 peer can add optional ones', () => {
    expect(agentJson({ type: 'pong', nonce: 'n-1', extra: { future: true } })).toEqual({
      ok: true,
      message: { type: 'pong', nonce: 'n-1' },
    });
  });

  it('reads a hello without allowRebind (an older agent) as null: it did not say it may rebind', () => {
    const { allowRebind: _, ...older } = hello;
    const parsed = agentJson(older);
    expect(parsed.ok && parsed.message.type === 'hello' && parsed.message.allowRebind).toBeNull();
    const readOnly = agentJson({ ...hello, allowRebind: false });
    expect(readOnly.ok && readOnly.message.type === 'hello' && readOnly.message.allowRebind).toBe(
      false,
    );
  });

  it('reads a job without persist (an older server) as not kept, a result without persistence as null', () => {
    const { persist: _, ...older } = job as Extract<ServerMessage, { type: 'job' }>;
    const parsed = parseServerMessage(JSON.stringify(older));
    expect(parsed.ok && parsed.message.type === 'job' && parsed.message.persist).toBe(false);
    const { persistence: __, ...olderResult } = succeeded;
    const result = agentJson(olderResult);
    expect(result.ok && result.message.type === 'job-result' && result.message.persistence).toBe(
      null,
    );
    expect(
      failure(
        agentJson({
          ...succeeded,
          persistence: {
            kept: [{ address: 'bad', driver: 'vfio-pci' }],
            forgotten: [],
            error: null,
          },
        }),
      ).message,
    ).toContain('persistence.kept');
  });

  it('parses a hello from a newer protocol version, so the server can answer it clearly', () => {
    const parsed = agentJson({ ...hello, protocolVersion: 2 });
    expect(parsed.ok && parsed.message.type === 'hello' && parsed.message.protocolVersion).toBe(2);
  });
});

describe('size is checked before parsing', () => {
  it('refuses a frame over MAX_SNAPSHOT_MESSAGE_BYTES without calling JSON.parse', () => {
    const parse = vi.spyOn(JSON, 'parse');
    // Not JSON at all: only a size check that runs first can answer too-large.
    const huge = 'x'.repeat(MAX_SNAPSHOT_MESSAGE_BYTES + 1);
    expect(failure(parseAgentMessage(huge)).code).toBe('too-large');
    expect(failure(parseAgentMessage(Buffer.from(huge))).code).toBe('too-large');
    expect(parse).not.toHaveBeenCalled();
  });

  it('counts UTF-8 bytes, not UTF-16 units', () => {
    const parse = vi.spyOn(JSON, 'parse');
    // 3 bytes per unit: under the limit in .length, over it on the wire.
    const wide = '€'.repeat(Math.floor(MAX_CONTROL_MESSAGE_BYTES / 3) + 1);
    expect(wide.length).toBeLessThan(MAX_CONTROL_MESSAGE_BYTES);
    expect(failure(parseServerMessage(wide)).code).toBe('too-large');
    expect(parse).not.toHaveBeenCalled();
    // And surrogate pairs are 4 bytes, not 6.
    const pairs = `"${'😀'.repeat(Math.floor((MAX_CONTROL_MESSAGE_BYTES - 2) / 4))}"`;
    expect(failure(parseServerMessage(pairs)).code).toBe('invalid');
  });

  it('holds every server message to MAX_CONTROL_MESSAGE_BYTES', () => {
    const padded = JSON.stringify({ ...job, pad: 'x'.repeat(MAX_CONTROL_MESSAGE_BYTES) });
    expect(failure(parseServerMessage(padded))).toEqual({
      code: 'too-large',
      message: `message exceeds ${MAX_CONTROL_MESSAGE_BYTES} bytes`,
    });
  });

  it('holds agent control messages to MAX_CONTROL_MESSAGE_BYTES, snapshots to the larger bound', () => {
    const pad = 'x'.repeat(MAX_CONTROL_MESSAGE_BYTES);
    const ping = failure(agentJson({ type: 'ping', nonce: 'n', sentAt: T0, pad }));
    expect(ping).toEqual({
      code: 'too-large',
      message: `a "ping" message exceeds ${MAX_CONTROL_MESSAGE_BYTES} bytes`,
    });
    // The same padding on a snapshot is within its bound (and dropped as an unknown field).
    const big = agentJson({ type: 'snapshot', epoch: 'e', seq: 0, snapshot: snapshot(), pad });
    expect(big.ok).toBe(true);
  });
});

describe('hostile input is an error value, never an exception', () => {
  it('not JSON', () => {
    const error = failure(parseAgentMessage('{"type": "ping", '));
    expect(error.code).toBe('not-json');
    expect(error.message).toMatch(/^message is not JSON: /);
  });

  it('invalid UTF-8 in a binary frame', () => {
    expect(failure(parseAgentMessage(new Uint8Array([0x7b, 0xff, 0x7d])))).toEqual({
      code: 'not-json',
      message: 'message is not valid UTF-8',
    });
  });

  it.each(['null', '[]', '42', '"hello"'])('JSON that is not an object: %s', (raw) => {
    expect(failure(parseAgentMessage(raw))).toEqual({
      code: 'invalid',
      message: '(message): expected a JSON object',
    });
  });

  it('unknown type', () => {
    const error = failure(agentJson({ type: 'reboot-host', now: true }));
    expect(error.code).toBe('invalid');
    expect(error.message).toMatch(/^type: /);
  });

  it('wrong type of `type`', () => {
    expect(failure(agentJson({ type: 7 })).message).toMatch(/^type: /);
  });

  it('a server-only message sent by an agent', () => {
    expect(failure(parseAgentMessage(encodeMessage(job))).message).toMatch(/^type: /);
  });

  it('missing field, named by its path', () => {
    const { deadline: _, ...noDeadline } = job as Extract<ServerMessage, { type: 'job' }>;
    const error = failure(parseServerMessage(JSON.stringify(noDeadline)));
    expect(error.code).toBe('invalid');
    expect(error.message).toMatch(/^deadline: /);
  });

  it('nested field, named by its full path', () => {
    const bad = snapshot();
    const gpu = bad.devices[0];
    if (gpu === undefined) throw new Error('builder has a device');
    gpu.address = '3b:00.0';
    const error = failure(agentJson({ type: 'snapshot', epoch: 'e', seq: 0, snapshot: bad }));
    expect(error.message).toMatch(
      /^snapshot\.devices\[0\]\.address: expected a canonical PCI address/,
    );
  });

  it('wrong protocolVersion type', () => {
    expect(failure(agentJson({ ...hello, protocolVersion: '1' })).message).toMatch(
      /^protocolVersion: /,
    );
    expect(
      failure(parseServerMessage(JSON.stringify({ ...serverMessages[0], protocolVersion: 1.5 })))
        .message,
    ).toMatch(/^protocolVersion: /);
  });

  it('an array over its bound', () => {
    const big = snapshot();
    const hex2 = (n: number) => n.toString(16).padStart(2, '0');
    big.devices = Array.from({ length: MAX_WIRE_DEVICES + 1 }, (_, i) =>
      device(`0000:${hex2(i >> 5)}:${hex2(i & 31)}.0`),
    );
    const raw = JSON.stringify({ type: 'snapshot', epoch: 'e', seq: 0, snapshot: big });
    expect(raw.length).toBeLessThan(MAX_SNAPSHOT_MESSAGE_BYTES);
    const error = failure(parseAgentMessage(raw));
    expect(error.code).toBe('invalid');
    expect(error.message).toMatch(/^snapshot\.devices: /);
  });

  it('too many labels, and an overlong label value', () => {
    const labels = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(failure(agentJson({ ...hello, labels })).message).toMatch(/^labels: at most 64 labels/);
    expect(failure(agentJson({ ...hello, labels: { rack: 'x'.repeat(257) } })).message).toMatch(
      /^labels\.rack: /,
    );
  });

  it('prototype-pollution keys are dropped or rejected, and pollute nothing', () => {
    const raw = `{"type":"hello","protocolVersion":1,"agentVersion":"1","host":{"hostname":"h","machineId":null,"kernelRelease":null},"auth":{"kind":"enroll","token":"0123456789abcdef"},"resume":null,"labels":{"__proto__":{"polluted":"yes"},"rack":"r1"},"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}`;
    const parsed = parseAgentMessage(raw);
    if (!parsed.ok || parsed.message.type !== 'hello') throw new Error('expected a hello');
    // zod never copies a __proto__ key into its output (assigning it would swap the prototype).
    expect(parsed.message.labels).toEqual({ rack: 'r1' });
    expect(Object.getPrototypeOf(parsed.message.labels)).toBe(Object.prototype);
    expect(Object.keys(parsed.message)).not.toContain('constructor');
    expect(Object.hasOwn(Object.prototype, 'polluted')).toBe(false);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // Keys that name inherited members are refused outright.
    for (const key of ['constructor', 'prototype', 'toString', 'hasOwnProperty']) {
      expect(failure(agentJson({ ...hello, labels: { [key]: 'x' } })).message).toMatch(
        /^labels\.\w+: reserved label key/,
      );
    }
  });

  it('a valid message carrying __proto__ at the top comes back without it, as a plain object', () => {
    const parsed = parseAgentMessage('{"type":"pong","nonce":"n","__proto__":{"polluted":"yes"}}');
    if (!parsed.ok) throw new Error(parsed.error.message);
    expect(Object.getPrototypeOf(parsed.message)).toBe(Object.prototype);
    expect(Object.keys(parsed.message)).toEqual(['type', 'nonce']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('error messages stay bounded: three issues, hostile keys quoted and clipped', () => {
    const labels = Object.fromEntries(
      Array.from({ length: 10 }, (_, i) => [`${'!'.repeat(200)}${i}`, 'v']),
    );
    const error = failure(agentJson({ ...hello, labels }));
    expect(error.message.length).toBeLessThanOrEqual(MAX_PARSE_ERROR_CHARS);
    expect(error.message).toMatch(/^labels\["!{64}"\]: Too big: expected string to have <=63/);
    expect(error.message).toMatch(/\(and 7 more\)$/);
  });

  it('reports how many more problems there were', () => {
    const error = failure(agentJson({ type: 'job-step' }));
    expect(error.message).toMatch(/\(and \d+ more\)$/);
  });

  it('the plan-step rules still hold inside a job-step (the agent reports what it wrote)', () => {
    const step = { ...unbindStep, path: '/etc/shadow' };
    const message = { ...agentMessages[7], step };
    expect(failure(agentJson(message)).message).toMatch(/^step\.path: /);
  });
});

describe('cross-field rules', () => {
  it('a delta must move forward', () => {
    const delta = agentMessages[3];
    expect(failure(agentJson({ ...delta, seq: 0 })).message).toMatch(/^seq: /);
  });

  it('a delta may not name one address twice', () => {
    const error = failure(
      agentJson({
        type: 'delta',
        epoch: 'e',
        baseSeq: 1,
        seq: 2,
        delta: { devicesAdded: [device(GPU)], devicesChanged: [], devicesRemoved: [GPU] },
      }),
    );
    expect(error.message).toMatch(
      /^delta\.devicesRemoved\[0\]: 0000:3b:00\.0 appears more than once/,
    );
  });

  it('a snapshot may not hold one address twice', () => {
    const dup = snapshot();
    dup.devices = [device(GPU), device(GPU)];
    expect(
      failure(agentJson({ type: 'snapshot', epoch: 'e', seq: 0, snapshot: dup })).message,
    ).toMatch(/^snapshot\.devices\[1\]\.address: /);
  });

  it('a job result agrees with its status', () => {
    expect(
      failure(agentJson({ ...succeeded, kernelError: { errno: 'EIO', message: 'x' } })).message,
    ).toMatch(/^kernelError: must be null when succeeded/);
    expect(failure(agentJson({ ...succeeded, status: 'refused' })).message).toMatch(
      /^reason: a refusal needs a reason/,
    );
  });

  it('a credential is for the agent being welcomed', () => {
    const welcome = { ...serverMessages[0], agentId: 'agt_other' };
    expect(failure(parseServerMessage(JSON.stringify(welcome))).message).toMatch(
      /^credential\.agentId: /,
    );
  });

  it('a job names a canonical address and an ISO deadline', () => {
    expect(
      failure(parseServerMessage(JSON.stringify({ ...job, address: '3b:00.0' }))).message,
    ).toMatch(/^address: /);
    expect(
      failure(parseServerMessage(JSON.stringify({ ...job, deadline: 'tomorrow' }))).message,
    ).toMatch(/^deadline: /);
  });
});

describe('never throws', () => {
  it('on arbitrary JSON values and strings', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue().map((v) => JSON.stringify(v)),
          fc.string(),
        ),
        (raw) => {
          parseAgentMessage(raw);
          parseServerMessage(raw);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('on valid messages with one field replaced by an arbitrary value', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...agentMessages, ...serverMessages),
        fc.jsonValue(),
        fc.nat(),
        (message, value, pick) => {
          const keys = Object.keys(message);
          const key = keys[pick % keys.length] ?? 'type';
          const raw = JSON.stringify({ ...message, [key]: value });
          const parsed = [parseAgentMessage(raw), parseServerMessage(raw)];
          for (const p of parsed) {
            if (!p.ok) expect(p.error.message.length).toBeLessThanOrEqual(MAX_PARSE_ERROR_CHARS);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
