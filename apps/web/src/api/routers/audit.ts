/** audit.list: the audit trail, newest first (operators and admins; viewers do not see who did what). */
import { z } from 'zod';
import { listAudit } from '../../audit/audit-log';
import { cursorInput, limitInput, uuidInput } from '../inputs';
import { createRouter, operatorProcedure } from '../trpc';

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
    .query(({ ctx, input }) => listAudit(ctx.db, input)),
});
