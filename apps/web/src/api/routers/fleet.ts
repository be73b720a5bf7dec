/** The fleet's read side: summary, capacity, hosts, devices, IOMMU groups (viewer and up). */
import { READINESS_STATUSES } from '@vfio-fleet/core';
import { z } from 'zod';
import { agentVersionCounts } from '../../fleet/agent-version-counts';
import { fleetCapacity } from '../../fleet/capacity';
import { searchDevices } from '../../fleet/devices';
import { DRIFT_DEFAULT_LIMIT, fleetDrift } from '../../fleet/drift';
import { getGroup } from '../../fleet/groups';
import { getHost, listHosts } from '../../fleet/hosts';
import { fleetLabelKeys } from '../../fleet/labels';
import { fleetSummary } from '../../fleet/summary';
import { cursorInput, hex4Input, labelsInput, limitInput, uuidInput } from '../inputs';
import { createRouter, viewerProcedure } from '../trpc';

export const fleetRouter = createRouter({
  summary: viewerProcedure
    .input(z.object({ labels: labelsInput }).default({}))
    .query(({ ctx, input }) => fleetSummary(ctx.db, input)),

  capacity: viewerProcedure
    .input(
      z
        .object({
          labels: labelsInput,
          hostIds: z.array(uuidInput).max(1000).optional(),
          groupBy: z.enum(['type', 'numa']).default('type'),
          /** Also split each type by this host label's value (rack, cluster, role). */
          labelKey: z.string().min(1).max(63).optional(),
          hostSearch: z.string().max(200).optional(),
        })
        .default({ groupBy: 'type' }),
    )
    .query(({ ctx, input }) => fleetCapacity(ctx.db, input)),

  /** Device types whose identical boards resolve to different vfio drivers (across kernels). */
  drift: viewerProcedure
    .input(
      z
        .object({
          labels: labelsInput,
          limit: z.number().int().min(1).max(100).default(DRIFT_DEFAULT_LIMIT),
        })
        .default({ limit: DRIFT_DEFAULT_LIMIT }),
    )
    .query(({ ctx, input }) => fleetDrift(ctx.db, input)),

  /** The host label keys in use, for "split by label" pickers. */
  labelKeys: viewerProcedure.query(({ ctx }) => fleetLabelKeys(ctx.db)),

  /** Hosts per agent version, and how many run one older than this server's. */
  agentVersions: viewerProcedure.query(({ ctx }) => agentVersionCounts(ctx.db)),
});

export const hostsRouter = createRouter({
  list: viewerProcedure
    .input(
      z
        .object({
          search: z.string().max(200).optional(),
          state: z.enum(['online', 'offline']).optional(),
          labels: labelsInput,
          sort: z.enum(['hostname', 'lastSeen', 'devices']).default('hostname'),
          dir: z.enum(['asc', 'desc']).default('asc'),
          limit: limitInput,
          cursor: cursorInput,
        })
        .default({ sort: 'hostname', dir: 'asc', limit: 50 }),
    )
    .query(({ ctx, input }) => listHosts(ctx.db, input)),

  get: viewerProcedure
    .input(z.object({ hostId: uuidInput }))
    .query(({ ctx, input }) => getHost(ctx.db, input.hostId)),
});

export const devicesRouter = createRouter({
  search: viewerProcedure
    .input(
      z
        .object({
          q: z.string().max(200).optional(),
          vendorId: hex4Input.optional(),
          deviceId: hex4Input.optional(),
          classPrefix: z
            .string()
            .regex(/^[0-9a-fA-F]{2,6}$/, 'expected 2 to 6 hex digits')
            .transform((s) => s.toLowerCase())
            .optional(),
          driver: z.string().min(1).max(64).optional(),
          status: z.enum(READINESS_STATUSES).optional(),
          reason: z
            .string()
            .regex(/^[a-z0-9-]{1,64}$/, 'expected a reason code')
            .optional(),
          labels: labelsInput,
          hostId: uuidInput.optional(),
          hostSearch: z.string().max(200).optional(),
          limit: limitInput,
          cursor: cursorInput,
        })
        .default({ limit: 50 }),
    )
    .query(({ ctx, input }) => searchDevices(ctx.db, input)),
});

export const groupsRouter = createRouter({
  get: viewerProcedure
    .input(z.object({ hostId: uuidInput, group: z.number().int().min(0).max(1_000_000) }))
    .query(({ ctx, input }) => getGroup(ctx.db, input)),
});
