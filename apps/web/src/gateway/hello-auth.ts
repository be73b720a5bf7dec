/**
 * The database side of a hello: an enrollment token spent for a new host and credential, or a
 * credential checked and its host marked online. The host is always the credential's (or the one
 * created for the token); hello.host is data, never identity.
 */
import { randomUUID } from 'node:crypto';
import type { HelloMessage } from '@vfio-fleet/core';
import { agentCredentials, type Database, hosts } from '@vfio-fleet/db';
import { eq, sql } from 'drizzle-orm';
import { hashSecret, issueCredential, secretMatches, spendEnrollmentToken } from './credentials';

export type HelloVerdict =
  | {
      ok: true;
      agentId: string;
      hostId: string;
      /** The credential issued by an enrollment, for `welcome`; null for a credential hello. */
      credential: { agentId: string; secret: string } | null;
      /** The agent's secret as stored (sha256), for HelloGuard.remember. */
      secretHash: string;
      /** Where the server's copy of the agent's inventory stream stands. */
      stream: { epoch: string | null; lastSeq: number | null; rawHashStored: boolean };
      /** A token whose use was not counted in the enrollment (TokenUseCounter counts it). */
      uncountedTokenUse: string | null;
    }
  | { ok: false; message: string };

export async function verifyHello(
  db: Database,
  hello: HelloMessage,
  now: Date,
): Promise<HelloVerdict> {
  const { auth } = hello;
  if (auth.kind === 'enroll') {
    const enrolled = await db.transaction(async (tx) => {
      const spent = await spendEnrollmentToken(tx, auth.token, now);
      if (spent === null) return null;
      const newAgentId = randomUUID();
      // Online from its first row: one transaction (one commit) per enrollment, which is what
      // bounds an enrollment storm.
      const [host] = await tx
        .insert(hosts)
        .values({
          agentId: newAgentId,
          hostname: hello.host.hostname,
          machineId: hello.host.machineId,
          kernelRelease: hello.host.kernelRelease,
          state: 'online',
          lastSeenAt: now,
          connectedAt: now,
          agentVersion: hello.agentVersion,
          allowRebind: hello.allowRebind,
        })
        .returning({ id: hosts.id });
      if (host === undefined) throw new Error('inserting the host returned no row');
      const issued = await issueCredential(tx, host.id, newAgentId);
      return { hostId: host.id, issued, spent };
    });
    if (enrolled === null) {
      return { ok: false, message: 'the enrollment token is unknown, expired, revoked or used up' };
    }
    return {
      ok: true,
      agentId: enrolled.issued.agentId,
      hostId: enrolled.hostId,
      credential: enrolled.issued,
      secretHash: hashSecret(enrolled.issued.secret),
      stream: { epoch: null, lastSeq: null, rawHashStored: false },
      uncountedTokenUse: enrolled.spent.counted ? null : enrolled.spent.id,
    };
  }
  const [row] = await db
    .select()
    .from(agentCredentials)
    .where(eq(agentCredentials.agentId, auth.agentId));
  // One answer for unknown, wrong and revoked, so a prober learns nothing about which ids exist.
  if (
    row === undefined ||
    !secretMatches(auth.secret, row.secretHash) ||
    row.revokedAt !== null ||
    row.hostId === null
  ) {
    return { ok: false, message: 'the credential was rejected (unknown, wrong or revoked)' };
  }
  const hostId = row.hostId;
  // One transaction, so a reconnect storm costs one commit per agent.
  const [host] = await db.transaction(async (tx) => {
    await tx
      .update(agentCredentials)
      .set({ lastUsedAt: now })
      .where(eq(agentCredentials.agentId, row.agentId));
    // The host identity is the credential's: hello.host never finds or moves a host row. The
    // version goes with the state: the fleet's agent versions are as fresh as its hellos.
    return tx
      .update(hosts)
      .set({
        state: 'online',
        lastSeenAt: now,
        connectedAt: now,
        agentVersion: hello.agentVersion,
        allowRebind: hello.allowRebind,
      })
      .where(eq(hosts.id, hostId))
      .returning({
        epoch: hosts.epoch,
        lastSeq: hosts.lastSeq,
        rawHashStored: sql<boolean>`${hosts.rawInventoryHash} IS NOT NULL`,
      });
  });
  if (host === undefined) return { ok: false, message: 'the credential belongs to no host' };
  return {
    ok: true,
    agentId: row.agentId,
    hostId,
    credential: null,
    secretHash: row.secretHash,
    stream: host,
    uncountedTokenUse: null,
  };
}
