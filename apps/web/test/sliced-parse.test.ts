// The gateway's parse of a large snapshot in slices (src/gateway/sliced-parse.ts) against core's
// one-shot parseAgentMessageForServer: the same message (key order included, which the inventory
// hash depends on) for a valid frame, and exactly its error for an invalid one.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type HostSnapshot, parseAgentMessageForServer } from '@vfio-fleet/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARSE_SLICE_DEVICES, parseAgentFrameInSlices } from '../src/gateway/sliced-parse';
import { scenarioSnapshot } from './helpers/inventory';

let tmp: string;
let template: HostSnapshot;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'web-sliced-parse-'));
  template = await scenarioSnapshot(tmp, 'mlx5-vf');
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const COUNT = PARSE_SLICE_DEVICES * 2 + 100;

/** A snapshot of COUNT copies of the template's first device, as a frame; `edit` may break it. */
function frame(edit: (devices: Record<string, unknown>[]) => void = () => {}): Buffer {
  const first = template.devices[0];
  if (first === undefined) throw new Error('no device');
  const devices: Record<string, unknown>[] = Array.from({ length: COUNT }, (_, i) => ({
    ...first,
    address: `0000:${(0x10 + (i >> 8)).toString(16)}:${((i >> 3) & 0x1f).toString(16).padStart(2, '0')}.${i & 7}`,
  }));
  edit(devices);
  const snapshot = { ...template, devices, groups: [] };
  return Buffer.from(JSON.stringify({ type: 'snapshot', epoch: 'e', seq: 2, snapshot }));
}

function sliced(raw: Buffer) {
  const steps = parseAgentFrameInSlices(raw);
  let pauses = 0;
  for (;;) {
    const step = steps.next();
    if (step.done === true) return { result: step.value, pauses };
    pauses += 1;
  }
}

describe('parseAgentFrameInSlices', () => {
  it('gives a valid large snapshot exactly as the one-shot parse, pausing between slices', () => {
    const raw = frame();
    const { result, pauses } = sliced(raw);
    expect(pauses).toBe(1 + Math.ceil(COUNT / PARSE_SLICE_DEVICES));
    expect(JSON.stringify(result)).toBe(JSON.stringify(parseAgentMessageForServer(raw)));
    expect(result.ok).toBe(true);
  });

  it.each([
    [
      'a bad device in a later slice',
      (d: Record<string, unknown>[]) => {
        const device = d[PARSE_SLICE_DEVICES + 7];
        if (device) device.vendorId = 'zzzz';
      },
    ],
    [
      'a duplicate address across slices',
      (d: Record<string, unknown>[]) => {
        const device = d[COUNT - 1];
        if (device) device.address = d[0]?.address;
      },
    ],
  ])('fails %s with the one-shot parse’s own error', (_, edit) => {
    const raw = frame(edit);
    const { result } = sliced(raw);
    expect(result.ok).toBe(false);
    expect(result).toEqual(parseAgentMessageForServer(raw));
  });
});
