/**
 * fleet.agentVersions: how many hosts run each agent version (and how many of them are online),
 * with the outdated ones counted, against the version this server ships. One GROUP BY over hosts.
 */
import type { Database } from '@vfio-fleet/db';
import { sql } from 'drizzle-orm';
import {
  type AgentVersionStatus,
  agentVersionStatus,
  CURRENT_AGENT_VERSION,
  compareVersions,
} from './agent-version';
import { rowsOf, toInt, toStringOrNull } from './sql-rows';

export interface AgentVersionCount {
  /** Null: hosts whose agent has not reported a version (not connected since it was recorded). */
  version: string | null;
  status: AgentVersionStatus;
  hosts: number;
  online: number;
}

export interface AgentVersionSummary {
  /** The version this server ships (apps/agent). */
  current: string;
  /** Newest first; unparsable and unreported versions last. */
  versions: AgentVersionCount[];
  hosts: number;
  outdated: number;
  newer: number;
  unknown: number;
}

export function summarizeAgentVersions(
  rows: readonly Omit<AgentVersionCount, 'status'>[],
  current: string = CURRENT_AGENT_VERSION,
): AgentVersionSummary {
  const versions = rows.map((r) => ({ ...r, status: agentVersionStatus(r.version, current) }));
  versions.sort((a, b) => {
    const order =
      a.version === null || b.version === null ? null : compareVersions(b.version, a.version);
    if (order !== null) return order;
    if ((a.status === 'unknown') !== (b.status === 'unknown'))
      return a.status === 'unknown' ? 1 : -1;
    if (a.version === null || b.version === null) return a.version === null ? 1 : -1;
    return a.version.localeCompare(b.version);
  });
  const count = (status: AgentVersionStatus) =>
    versions.filter((v) => v.status === status).reduce((n, v) => n + v.hosts, 0);
  return {
    current,
    versions,
    hosts: versions.reduce((n, v) => n + v.hosts, 0),
    outdated: count('outdated'),
    newer: count('newer'),
    unknown: count('unknown'),
  };
}

export async function agentVersionCounts(db: Database): Promise<AgentVersionSummary> {
  const rows = rowsOf<Record<string, unknown>>(
    await db.execute(sql`
      SELECT h.agent_version, count(*)::int AS hosts,
             count(*) FILTER (WHERE h.state = 'online')::int AS online
      FROM hosts h GROUP BY h.agent_version`),
  );
  return summarizeAgentVersions(
    rows.map((r) => ({
      version: toStringOrNull(r.agent_version),
      hosts: toInt(r.hosts),
      online: toInt(r.online),
    })),
  );
}
