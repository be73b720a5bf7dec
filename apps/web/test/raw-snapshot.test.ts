// rawSnapshotFrame: which resent snapshot frames count as the stored one from their bytes alone.
// Anything it accepts skips parsing and validation, so what it must refuse matters as much as
// what it must match.
import { encodeMessage, type SnapshotMessage } from '@vfio-fleet/core';
import { describe, expect, it } from 'vitest';
import { rawSnapshotFrame } from '../src/gateway/raw-snapshot';

const snapshot = {
  schemaVersion: 1,
  collectedAt: '2026-12-04T10:00:00.000Z',
  host: { hostname: 'gpu-01', kernelRelease: '6.12.0' },
  devices: [{ address: '0000:41:00.0', driver: 'nvidia' }],
};

function frame(overrides: Record<string, unknown> = {}, body: object = snapshot): Buffer {
  return Buffer.from(
    JSON.stringify({ type: 'snapshot', epoch: 'e-1', seq: 7, snapshot: body, ...overrides }),
  );
}

function hashOf(raw: Uint8Array, labels: Record<string, string> = {}): string {
  const view = rawSnapshotFrame(raw, labels);
  if (view === null) throw new Error('no raw view');
  return view.hash;
}

describe('rawSnapshotFrame', () => {
  it('reads the envelope of a frame as encodeMessage writes it', () => {
    const message = {
      type: 'snapshot',
      epoch: 'boot-2026.12:a_b-c',
      seq: 123456789,
      snapshot,
    } as unknown as SnapshotMessage;
    expect(rawSnapshotFrame(Buffer.from(encodeMessage(message)), {})).toMatchObject({
      epoch: 'boot-2026.12:a_b-c',
      seq: 123456789,
      hash: expect.stringMatching(/^r2:[0-9a-f]{64}$/),
    });
  });

  it('gives a resend the same hash: another read time, another epoch and seq', () => {
    const later = { ...snapshot, collectedAt: '2026-12-04T10:05:00.123456+01:00' };
    expect(hashOf(frame({ epoch: 'e-2', seq: 8 }, later))).toBe(hashOf(frame()));
    expect(rawSnapshotFrame(frame({ epoch: 'e-2', seq: 8 }), {})).toMatchObject({
      epoch: 'e-2',
      seq: 8,
    });
  });

  it('gives any other change another hash, and other labels another hash', () => {
    const base = hashOf(frame());
    const renamed = { ...snapshot, host: { ...snapshot.host, hostname: 'gpu-02' } };
    expect(hashOf(frame({}, renamed))).not.toBe(base);
    const rebound = { ...snapshot, devices: [{ address: '0000:41:00.0', driver: 'vfio-pci' }] };
    expect(hashOf(frame({}, rebound))).not.toBe(base);
    // A member after the snapshot is part of what the agent sent, too.
    expect(hashOf(frame({ extra: 1 }))).not.toBe(base);
    expect(hashOf(frame(), { rack: 'r1' })).not.toBe(base);
    expect(hashOf(frame(), { rack: 'r1' })).toBe(hashOf(frame(), { rack: 'r1' }));
  });

  it('has no hash for a frame written any other way, which then takes the full path', () => {
    const refused: [string, Buffer][] = [
      [
        'another key order',
        Buffer.from(JSON.stringify({ type: 'snapshot', seq: 7, epoch: 'e-1', snapshot })),
      ],
      [
        'whitespace',
        Buffer.from(JSON.stringify({ type: 'snapshot', epoch: 'e-1', seq: 7, snapshot }, null, 1)),
      ],
      [
        'not a snapshot',
        Buffer.from(JSON.stringify({ type: 'delta', epoch: 'e-1', seq: 7, snapshot })),
      ],
      ['an epoch the schema refuses', frame({ epoch: '-e' })],
      ['an epoch past 64 characters', frame({ epoch: 'e'.repeat(65) })],
      ['a negative seq', frame({ seq: -1 })],
      ['a fractional seq', frame({ seq: 7.5 })],
      [
        'a seq past the safe integers',
        Buffer.from(frame().toString().replace('"seq":7', '"seq":9007199254740993')),
      ],
      ['a snapshot that is not an object', frame({ snapshot: [1] })],
      // A value the next quote does not end (an escape) could hide a structural change.
      ['a read time with an escaped quote', frame({}, { ...snapshot, collectedAt: 'x\\"y' })],
      ['a read time of other characters', frame({}, { ...snapshot, collectedAt: 'x y' })],
      [
        'an unterminated read time',
        Buffer.from('{"type":"snapshot","epoch":"e","seq":1,"snapshot":{"collectedAt":"2026'),
      ],
      ['UTF-16', Buffer.from(frame().toString(), 'utf16le')],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [name, raw] of refused) expect(rawSnapshotFrame(raw, {}), name).toBeNull();
  });

  it('hashes a snapshot without a read time whole', () => {
    const { collectedAt: _none, ...timeless } = snapshot;
    const view = rawSnapshotFrame(frame({}, timeless), {});
    expect(view?.hash).toMatch(/^r2:/);
    expect(hashOf(frame({ seq: 9 }, timeless))).toBe(view?.hash);
    expect(hashOf(frame({}, { ...timeless, schemaVersion: 2 }))).not.toBe(view?.hash);
  });

  it('reads a frame that ws handed as a slice of a larger buffer', () => {
    const whole = Buffer.concat([Buffer.from('garbage-before'), frame(), Buffer.from('after')]);
    const slice = whole.subarray(14, whole.length - 5);
    expect(hashOf(new Uint8Array(slice.buffer, slice.byteOffset, slice.byteLength))).toBe(
      hashOf(frame()),
    );
  });
});
