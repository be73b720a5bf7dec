/**
 * Every string and array a peer can send is bounded: the wire schemas are walked, so a field
 * added later (to a message or to the inventory, which the wire schemas extend) fails here until
 * it gets a bound.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import type { Device, Host, HostSnapshot } from '../src/inventory/schema';
import type { SnapshotDelta } from '../src/protocol/delta';
import {
  agentMessageSchema,
  MAX_CONTROL_MESSAGE_BYTES,
  MAX_JOB_DEVICES,
  MAX_JOB_STEPS,
  MAX_LABELS,
  MAX_SNAPSHOT_MESSAGE_BYTES,
  MAX_WIRE_DEVICES,
  serverMessageSchema,
  type wireDeviceSchema,
  type wireHostSchema,
  type wireHostSnapshotSchema,
} from '../src/protocol/messages';

type AnySchema = z.core.$ZodType;

interface Check {
  _zod: { def: { check: string; format?: string; pattern?: RegExp } };
}

function checksOf(schema: AnySchema): Check[] {
  const def = schema._zod.def as { checks?: Check[] };
  return def.checks ?? [];
}

/** An anchored pattern with no unbounded quantifier outside character classes. */
function boundedPattern(pattern: RegExp): boolean {
  const source = pattern.source.replace(/\\./g, 'x').replace(/\[[^\]]*\]/g, 'c');
  return (
    source.startsWith('^') &&
    source.endsWith('$') &&
    !/[*+]/.test(source) &&
    !/\{\d+,\}/.test(source)
  );
}

function stringBounded(schema: AnySchema): boolean {
  return checksOf(schema).some(
    (c) =>
      c._zod.def.check === 'max_length' ||
      (c._zod.def.check === 'string_format' &&
        c._zod.def.pattern !== undefined &&
        boundedPattern(c._zod.def.pattern)),
  );
}

/** Paths of every unbounded string or array reachable from `schema`. */
function unbounded(schema: AnySchema, path: string, out: string[], seen: Set<AnySchema>): void {
  if (seen.has(schema)) return;
  seen.add(schema);
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  const child = (s: unknown, p: string) => unbounded(s as AnySchema, p, out, seen);
  switch (def.type) {
    case 'string':
      if (!stringBounded(schema)) out.push(path);
      return;
    case 'array':
      if (!checksOf(schema).some((c) => c._zod.def.check === 'max_length')) out.push(path);
      child(def.element, `${path}[]`);
      return;
    case 'object':
      for (const [key, value] of Object.entries(def.shape as Record<string, unknown>)) {
        child(value, `${path}.${key}`);
      }
      return;
    case 'record':
      child(def.keyType, `${path}{key}`);
      child(def.valueType, `${path}{value}`);
      return;
    case 'union':
      (def.options as unknown[]).forEach((o, i) => {
        child(o, `${path}|${i}`);
      });
      return;
    case 'nullable':
    case 'optional':
    case 'default':
      child(def.innerType, path);
      return;
    case 'literal':
    case 'enum':
    case 'number':
    case 'boolean':
      return;
    default:
      out.push(`${path} (unhandled ${def.type})`);
  }
}

describe('wire schema bounds', () => {
  it.each([
    ['agent', agentMessageSchema],
    ['server', serverMessageSchema],
  ] as const)('every string and array a %s message can carry has a maximum', (_, schema) => {
    const out: string[] = [];
    unbounded(schema, '', out, new Set());
    expect(out).toEqual([]);
  });

  it('the walker notices an unbounded field (it is not vacuous)', async () => {
    const { z: zod } = await import('zod');
    const out: string[] = [];
    unbounded(
      zod.object({ a: zod.string(), b: zod.array(zod.number()), c: zod.string().regex(/^a+$/) }),
      '',
      out,
      new Set(),
    );
    expect(out).toEqual(['.a', '.b', '.c']);
  });

  it('the wire inventory types are exactly the inventory types', () => {
    expectTypeOf<z.infer<typeof wireHostSnapshotSchema>>().toEqualTypeOf<HostSnapshot>();
    expectTypeOf<z.infer<typeof wireDeviceSchema>>().toEqualTypeOf<Device>();
    expectTypeOf<z.infer<typeof wireHostSchema>>().toEqualTypeOf<Host>();
    expectTypeOf<SnapshotDelta['devicesAdded'][number]>().toEqualTypeOf<Device>();
  });
});

describe('docs/protocol.md', () => {
  const doc = readFileSync(path.resolve(import.meta.dirname, '../../../docs/protocol.md'), 'utf8');
  const section = (heading: string): string => {
    const start = doc.indexOf(heading);
    expect(start).toBeGreaterThanOrEqual(0);
    const end = doc.indexOf('\n### ', start + heading.length);
    return doc.slice(start, end < 0 ? undefined : end);
  };
  const typesOf = (schema: typeof agentMessageSchema | typeof serverMessageSchema) =>
    schema.options.map((option) => option.shape.type.value);

  it.each([
    ['### Agent → server', agentMessageSchema],
    ['### Server → agent', serverMessageSchema],
  ] as const)('"%s" has a row for every message type and no other', (heading, schema) => {
    const rows = [...section(heading).matchAll(/^\| `([a-z-]+)` \|/gm)]
      .map((m) => m[1])
      // The table's header row.
      .filter((type) => type !== 'type');
    expect(new Set(rows)).toEqual(new Set(typesOf(schema)));
  });

  it('states the size limits the code enforces', () => {
    const grouped = (n: number) => n.toLocaleString('en-US').replaceAll(',', ' ');
    expect(doc).toContain(`8 MiB (${grouped(MAX_SNAPSHOT_MESSAGE_BYTES)})`);
    expect(doc).toContain(`64 KiB (${grouped(MAX_CONTROL_MESSAGE_BYTES)})`);
    expect(doc).toContain(`≤ ${MAX_LABELS} (\`MAX_LABELS\`)`);
    expect(doc).toContain(`\`MAX_JOB_STEPS\` = ${MAX_JOB_STEPS}`);
    expect(doc).toContain(`≤ ${MAX_JOB_DEVICES} (\`MAX_JOB_DEVICES\`)`);
    expect(doc).toContain(`≤ ${MAX_WIRE_DEVICES} (\`MAX_WIRE_DEVICES\``);
  });
});
