/**
 * Telling apart hosts that report the same hostname (a cloned image, a reused name): nothing in
 * the list or on the host page did. A host whose hostname another host also reports gets a short
 * distinguishing id: the start of its machine-id (what `cat /etc/machine-id` shows on the host),
 * or, where that does not tell them apart (a cloned machine-id, none reported), the start of its
 * host id. Hosts with a hostname of their own get none: the list stays as it was.
 */
import type { Database } from '@vfio-fleet/db';
import { textArrayLiteral } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import { rowsOf, toStringOrNull } from './sql-rows';

/** Characters of an id shown: 8 hex digits tell a fleet's hosts apart in practice. */
const SHORT = 8;

interface Twin {
  id: string;
  hostname: string;
  machineId: string | null;
}

/** By host id: "machine-id 3f2a9c1e" / "host id 7b1c2d3e", or null when the hostname is its own. */
export async function hostDistinguishers(
  db: Database,
  hosts: readonly Pick<Twin, 'id' | 'hostname'>[],
): Promise<Map<string, string | null>> {
  const names = [...new Set(hosts.map((h) => h.hostname))];
  const byName = new Map<string, Twin[]>();
  if (names.length > 0) {
    const rows = rowsOf<Record<string, unknown>>(
      await db.execute(sql`
        SELECT id, hostname, machine_id FROM hosts
        WHERE hostname = ANY(${textArrayLiteral(names)}::text[])`),
    );
    for (const r of rows) {
      const twin = {
        id: String(r.id),
        hostname: String(r.hostname),
        machineId: toStringOrNull(r.machine_id),
      };
      byName.set(twin.hostname, [...(byName.get(twin.hostname) ?? []), twin]);
    }
  }
  const result = new Map<string, string | null>();
  for (const host of hosts) {
    const named = byName.get(host.hostname) ?? [];
    const self = named.find((t) => t.id === host.id);
    const others = named.filter((t) => t.id !== host.id);
    result.set(host.id, others.length === 0 ? null : distinguisher(host.id, self, others));
  }
  return result;
}

function distinguisher(id: string, self: Twin | undefined, others: readonly Twin[]): string {
  const prefix = self?.machineId?.slice(0, SHORT) ?? null;
  const unique =
    prefix !== null &&
    prefix !== '' &&
    others.every((o) => o.machineId?.slice(0, SHORT) !== prefix);
  return unique ? `machine-id ${prefix}` : `host id ${id.slice(0, SHORT)}`;
}
