/**
 * hostView: the host page's one query (hosts.get plus each device's vfio selection and why).
 * Mounted in root.ts as `hostView`.
 */
import { z } from 'zod';
import { getHostView } from '../../fleet/host-view';
import { uuidInput } from '../inputs';
import { createRouter, viewerProcedure } from '../trpc';

export const hostViewRouter = createRouter({
  get: viewerProcedure
    .input(z.object({ hostId: uuidInput }))
    .query(({ ctx, input }) => getHostView(ctx.db, input.hostId)),
});
