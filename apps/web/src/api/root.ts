/** The whole API: one router per area. `AppRouter` is the type the dashboard's client imports. */
import { agentsRouter, tokensRouter, usersRouter } from './routers/admin';
import { auditRouter } from './routers/audit';
import { authRouter } from './routers/auth';
import { devicesRouter, fleetRouter, groupsRouter, hostsRouter } from './routers/fleet';
import { hostViewRouter } from './routers/host-view';
import { jobsRouter } from './routers/jobs';
import { createRouter } from './trpc';

export const appRouter = createRouter({
  auth: authRouter,
  fleet: fleetRouter,
  hosts: hostsRouter,
  hostView: hostViewRouter,
  devices: devicesRouter,
  groups: groupsRouter,
  jobs: jobsRouter,
  tokens: tokensRouter,
  agents: agentsRouter,
  users: usersRouter,
  audit: auditRouter,
});

export type AppRouter = typeof appRouter;
