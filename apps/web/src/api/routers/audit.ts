/** audit.list: the audit trail, newest first (operators and admins; viewers do not see who did what). */
import { hosts } from '@vfio-fleet/db';
import { inArray } from 'drizzle-orm';
import { z } from 'zod';
import { type AuditView, listAudit } from '../../audit/audit-log';
import { cursorInput, limitInput, uuidInput } from '../inputs';
import { createRouter, operatorProcedure } from '../trpc';

export interface AuditListItem extends AuditView {
  /** The host's current name; null when the entry names no host or the host row is gone. */
  hostname: string | null;
}

export const auditRouter = createRouter({
  list: operatorProcedure
    .input(
      z
        .object({
          limit: limitInput,
          cursor: cursorInput,
          action: z.string().min(1).max(64).optional(),
          hostId: uuidInput.optional(),
        })
        .default({ limit: 50 }),
    )
    .query(async ({ ctx, input }) => {
      const page = await listAudit(ctx.db, input);
      // The rows keep host ids only (the trail outlives hosts); one lookup for the whole page
      // names them, so the dashboard never asks per row.
      const ids = [...new Set(page.items.flatMap((a) => (a.hostId === null ? [] : [a.hostId])))];
      const names =
        ids.length === 0
          ? []
          : await ctx.db
              .select({ id: hosts.id, hostname: hosts.hostname })
              .from(hosts)
              .where(inArray(hosts.id, ids));
      const byId = new Map(names.map((h) => [h.id, h.hostname]));
      return {
        items: page.items.map(
          (a): AuditListItem => ({
            ...a,
            hostname: a.hostId === null ? null : (byId.get(a.hostId) ?? null),
          }),
        ),
        nextCursor: page.nextCursor,
      };
    }),
});
