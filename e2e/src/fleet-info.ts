/**
 * What global setup hands to the tests: where the fleet runs, who can sign in, and the numbers the
 * fixtures imply (computed from each agent's own `scan --json`, never from the server). Written as
 * one JSON file per Playwright project and parsed back with zod, since it crosses processes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { readinessStatusSchema } from '@vfio-fleet/core';
import { z } from 'zod';

export const DATABASES = ['pglite', 'postgres'] as const;
export type DatabaseKind = (typeof DATABASES)[number];

/** The mlx5-vf scenario's first VF (alone in its IOMMU group, ready for mlx5_vfio_pci). */
export const MLX5_VF = '0000:41:00.2';

/** Where the journeys save their screenshots (an artifact of every run, not only of failures). */
export const SCREENSHOTS_DIR = path.resolve(import.meta.dirname, '../test-results/screenshots');

/** The environment variable naming the directory that holds `<project>.json`. */
export const FLEET_DIR_ENV = 'VFIO_FLEET_E2E_DIR';

const countsSchema = z.object({
  total: z.number().int(),
  /** Bound to a vfio driver (vfio-pci or a *_vfio_pci variant), as capacity counts it. */
  onVfio: z.number().int(),
  'in-use': z.number().int(),
  bound: z.number().int(),
  ready: z.number().int(),
  blocked: z.number().int(),
});
export type Counts = z.infer<typeof countsSchema>;

const deviceSchema = z.object({
  address: z.string(),
  vendorId: z.string(),
  deviceId: z.string(),
  driver: z.string().nullable(),
  vfioDriver: z.string().nullable(),
  iommuGroup: z.number().int().nullable(),
  status: readinessStatusSchema,
  reasons: z.array(z.object({ code: z.string(), message: z.string() })),
});
export type ExpectedDevice = z.infer<typeof deviceSchema>;

const hostSchema = z.object({
  scenario: z.string(),
  hostname: z.string(),
  hostId: z.string(),
  labels: z.record(z.string(), z.string()),
  devices: z.array(deviceSchema),
});
export type ExpectedHost = z.infer<typeof hostSchema>;

export const fleetInfoSchema = z.object({
  project: z.enum(DATABASES),
  url: z.string(),
  users: z.object({
    admin: z.object({ username: z.string(), password: z.string() }),
    operator: z.object({ username: z.string(), password: z.string() }),
    viewer: z.object({ username: z.string(), password: z.string() }),
  }),
  /**
   * A session per role (`name=value`), made through auth.login in setup, so journeys other than
   * the login test start signed in instead of paying a login (scrypt) each.
   */
  sessions: z.object({ admin: z.string(), operator: z.string(), viewer: z.string() }),
  hosts: z.array(hostSchema),
  expected: z.object({
    hostsOnline: z.number().int(),
    devices: countsSchema,
    /** Per vendor:device, sorted by key. */
    types: z.array(
      countsSchema.extend({
        vendorId: z.string(),
        deviceId: z.string(),
        /** The pci.ids name the agent read, when it had pci.ids. */
        deviceName: z.string().nullable(),
      }),
    ),
  }),
  /** A tree and state dir for the agent the kill test starts itself (with a hanging probe). */
  faultyHost: z.object({
    hostname: z.string(),
    root: z.string(),
    stateDir: z.string(),
    faultsFile: z.string(),
    /** The VF whose probe hangs. */
    address: z.string(),
  }),
  /** Extra arguments every agent gets (`--pci-ids FILE` when the shared pci.ids is there). */
  agentExtraArgs: z.array(z.string()),
  /** Tests append the pid of each process they start, one a line; teardown kills what is left. */
  pidsFile: z.string(),
});
export type FleetInfo = z.infer<typeof fleetInfoSchema>;

export function fleetInfoPath(dir: string, project: DatabaseKind): string {
  return path.join(dir, `${project}.json`);
}

/** The fleet of a project, as global setup wrote it. */
export function readFleetInfo(project: string): FleetInfo {
  const dir = process.env[FLEET_DIR_ENV];
  if (dir === undefined || dir === '') {
    throw new Error(`${FLEET_DIR_ENV} is not set: the e2e global setup did not run`);
  }
  const kind = z.enum(DATABASES).parse(project);
  return fleetInfoSchema.parse(JSON.parse(readFileSync(fleetInfoPath(dir, kind), 'utf8')));
}
