/**
 * `vfio-fleet-agent run`: wires the daemon's components (credential store, kernel access, inventory
 * stream, job runner, connection) and owns their order of start and stop.
 *
 * Start: state dir, its lock (one `run` per state dir: agent.lock) and credential first (a
 * missing credential without a token is an operator mistake, reported before any network
 * traffic), then persisted bindings are re-applied (before
 * anything else touches the host, as `bind --persist` promises), then one host read (hello needs
 * the host's identity, and a bad --root fails fast), then the stream and the connection.
 *
 * Stop: no new jobs; jobs running are waited for (a rebind cut between two sysfs writes would
 * leave a group half-moved; every step has its own timeout) while the socket stays up so their
 * results still go out; then the scan timer; then the socket, closed with 1000; then the lock.
 */
import { randomUUID } from 'node:crypto';
import {
  type AgentAuth,
  type ErrorMessage,
  type HelloMessage,
  type Host,
  type HostSnapshot,
  type KernelIo,
  PROTOCOL_VERSION,
  type ServerMessage,
  type WelcomeMessage,
} from '@vfio-fleet/core';
import type { HeldLock, LockInfo } from '@vfio-fleet/local-state';
import packageJson from '../../package.json';
import { AgentError } from '../errors';
import { HostFs } from '../host-fs';
import { collectHost } from '../inventory/collect';
import { HolderCache } from '../inventory/read-holders';
import { stuckWrites } from '../kernel/stuck-writes';
import { lockedReaderFor, SysfsKernelIo } from '../kernel/sysfs-kernel-io';
import type { Logger } from '../logger';
import { type PersistedBinding, readPersistedBindings } from '../rebind/bindings-file';
import { RebindExecutor } from '../rebind/executor';
import { reapplyPersistedBindings } from '../rebind/persist';
import { type Clock, type Random, systemClock } from './clock';
import { Connection } from './connection';
import { CredentialStore, type StoredCredential } from './credential-store';
import { IN_USE_POLL_MS, InUseWatch, type WatchedDevice } from './in-use-watch';
import { InventoryStream } from './inventory-stream';
import { JobRunner } from './job-runner';
import { type SimulatedKernelOptions, SplitKernelIo, simulatedKernel } from './simulate';
import { lockStateDir } from './state-lock';

export const AGENT_VERSION: string = packageJson.version;

export interface DaemonOptions {
  /** The server's agent endpoint (ws:// or wss://). */
  endpoint: URL;
  /** One-time enrollment token; used only while no credential is stored. */
  token: string | null;
  stateDir: string;
  /** Host root every read (and, simulated, every write) goes through. */
  root: string;
  pciIdsPath: string | null;
  allowRebind: boolean;
  intervalMs: number;
  labels: Record<string, string>;
  /** Drive the kernel model over `root` instead of real sysfs. */
  simulate: SimulatedKernelOptions | null;
  logger: Logger;
  clock?: Clock;
  random?: Random;
  /** Skip the start-up splay (the first dial happens at once). */
  splay?: boolean;
  /** Written into the state dir's lock, for whoever finds it held (a local agent's server). */
  lockInfo?: LockInfo;
}

/** How the daemon ended on its own (the server refused it); a signal ends it through stop(). */
export interface DaemonHalt {
  code: string;
  message: string;
}

export class AgentDaemon {
  private readonly logger: Logger;
  private readonly clock: Clock;
  private readonly credentials: CredentialStore;
  private readonly fs: HostFs;
  private credential: StoredCredential | null = null;
  private identity: Pick<Host, 'hostname' | 'machineId' | 'kernelRelease'> | null = null;
  private inventory: InventoryStream | null = null;
  private jobs: JobRunner | null = null;
  private inUseWatch: InUseWatch | null = null;
  /** The devices of the last scan: the in-use watch compares `enable` against them. */
  private lastDevices: readonly WatchedDevice[] | null = null;
  private readonly holderCache = new HolderCache();
  private connection: Connection | null = null;
  private stateLock: HeldLock | null = null;
  private io: KernelIo | null = null;
  private unsubscribeStuck: () => void = () => undefined;
  private resolveHalt: (halt: DaemonHalt) => void = () => undefined;
  private persistedError: string | null = null;
  /** Resolves when the server ends this agent's session for good (a fatal error). */
  readonly halted: Promise<DaemonHalt>;

  constructor(private readonly options: DaemonOptions) {
    this.logger = options.logger;
    this.clock = options.clock ?? systemClock;
    this.credentials = new CredentialStore(options.stateDir, options.logger);
    this.fs = new HostFs(options.root);
    this.halted = new Promise((resolve) => {
      this.resolveHalt = resolve;
    });
  }

  async start(): Promise<void> {
    await this.credentials.start();
    this.stateLock = await lockStateDir(
      this.options.stateDir,
      this.options.lockInfo ?? {},
      this.logger,
    );
    try {
      await this.startLocked();
    } catch (error) {
      await this.stateLock?.release();
      throw error;
    }
  }

  private async startLocked(): Promise<void> {
    const { options, logger } = this;
    this.credential = await this.credentials.load();
    if (this.credential === null && options.token === null) {
      throw new AgentError(
        'invalid-argument',
        `run: no credential in ${this.credentials.file} and no --token or VFIO_FLEET_TOKEN: enroll this host once with a token from the dashboard`,
      );
    }
    logger.info(
      {
        agentVersion: AGENT_VERSION,
        root: options.root,
        stateDir: options.stateDir,
        allowRebind: options.allowRebind,
        simulate: options.simulate !== null,
        enrolled: this.credential !== null,
      },
      'agent starting',
    );

    const io: KernelIo =
      options.simulate === null
        ? new SysfsKernelIo(options.root)
        : await simulatedKernel(options.root, options.simulate);
    this.io = io;
    const executorDeps = {
      fs: this.fs,
      io,
      stateDir: options.stateDir,
      allowRebind: options.allowRebind,
      pciIdsPath: options.pciIdsPath ?? undefined,
      logger,
      ...(options.simulate?.stepTimeoutMs === undefined
        ? {}
        : { stepTimeoutMs: options.simulate.stepTimeoutMs }),
    };
    await this.reapply(executorDeps);

    // Fails start (bad root, unreadable sysfs) before a server ever sees this agent.
    await this.collect();

    const connection = new Connection(
      {
        url: options.endpoint,
        logger,
        clock: this.clock,
        random: options.random ?? Math.random,
        intervalMs: options.intervalMs,
        ...(options.splay === undefined ? {} : { splay: options.splay }),
      },
      {
        hello: () => this.hello(),
        welcomed: (welcome) => this.welcomed(welcome),
        message: (message) => this.receive(message),
        disconnected: () => this.inventory?.disconnected(),
        fatal: (error) => this.fatal(error),
      },
    );
    this.connection = connection;
    this.inventory = new InventoryStream({
      collect: () => this.collect(),
      sink: connection,
      intervalMs: options.intervalMs,
      clock: this.clock,
      logger,
      epoch: randomUUID(),
    });
    this.inUseWatch = new InUseWatch({
      fs: this.fs,
      devices: () => this.lastDevices,
      changed: () => this.inventory?.rescanNow(),
      intervalMs: Math.min(IN_USE_POLL_MS, options.intervalMs),
      clock: this.clock,
      logger,
    });
    this.jobs = new JobRunner({
      executor: new RebindExecutor(executorDeps),
      sink: connection,
      logger,
      now: () => this.clock.now(),
      finished: () => this.inventory?.rescanNow(),
    });
    // A write stuck in the kernel, and later its return: the server learns both at once.
    this.unsubscribeStuck = stuckWrites.subscribe((write, event) => {
      if (event === 'stuck') logger.warn(write, 'a sysfs write is stuck in the kernel');
      else logger.info(write, 'a stuck sysfs write returned');
      this.inventory?.rescanNow();
    });
    this.jobs.start();
    this.inventory.start();
    this.inUseWatch.start();
    connection.start();
  }

  async stop(): Promise<void> {
    const running = this.jobs?.running ?? 0;
    this.logger.info({ jobsRunning: running }, 'agent stopping');
    await this.jobs?.stop();
    await this.inUseWatch?.stop();
    await this.inventory?.stop();
    this.unsubscribeStuck();
    if (this.io instanceof SysfsKernelIo) this.io.close();
    if (this.io instanceof SplitKernelIo) this.io.sysfs.close();
    await this.connection?.stop();
    await this.credentials.stop();
    await this.stateLock?.release();
    this.logger.info('agent stopped');
  }

  /**
   * Re-applies the bindings kept across reboots (`bind --persist`, or a job that asked to keep
   * one while rebinding was allowed): decisions already made, so they apply whether or not
   * --allow-rebind (which gates new jobs from a server) is given; devices
   * already on their recorded driver, and every device without a record, are left alone, so a
   * restart of the agent changes no binding. A failure here is logged, never fatal: the host must
   * still be reported.
   */
  private async reapply(deps: ConstructorParameters<typeof RebindExecutor>[0]): Promise<void> {
    try {
      for (const result of await reapplyPersistedBindings(deps)) {
        const level = result.action === 'refused' || result.action === 'failed' ? 'warn' : 'info';
        this.logger[level](
          { address: result.address, action: result.action, message: result.message },
          'persisted binding',
        );
      }
    } catch (error) {
      this.logger.error({ err: error }, 're-applying persisted bindings failed');
    }
  }

  private async collect(): Promise<HostSnapshot> {
    const snapshot = await collectHost(this.fs, {
      pciIdsPath: this.options.pciIdsPath,
      logger: this.logger,
      holders: this.holderCache,
      lockedRead: lockedReaderFor(this.io),
      persisted: await this.persisted(),
    });
    const { hostname, machineId, kernelRelease } = snapshot.host;
    this.identity = { hostname, machineId, kernelRelease };
    this.lastDevices = snapshot.devices;
    return snapshot;
  }

  /** bindings.json, for each device's keptBy; a damaged file is logged once per change of error. */
  private async persisted(): Promise<PersistedBinding[]> {
    try {
      const bindings = await readPersistedBindings(this.options.stateDir);
      this.persistedError = null;
      return bindings;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (message !== this.persistedError) {
        this.logger.warn({ err: error }, 'persisted bindings not readable: kept-by omits them');
      }
      this.persistedError = message;
      return [];
    }
  }

  private hello(): HelloMessage {
    const auth: AgentAuth =
      this.credential !== null
        ? { kind: 'credential', ...this.credential }
        : { kind: 'enroll', token: this.options.token ?? '' };
    const identity = this.identity ?? { hostname: 'unknown', machineId: null, kernelRelease: null };
    return {
      type: 'hello',
      protocolVersion: PROTOCOL_VERSION,
      agentVersion: AGENT_VERSION,
      // Clipped to hello's bounds: an odd host file (an empty hostname, a long machine-id) must
      // not make the server reject the whole session as a protocol violation.
      host: {
        hostname: identity.hostname === '' ? 'unknown' : identity.hostname.slice(0, 253),
        machineId: identity.machineId?.slice(0, 128) ?? null,
        kernelRelease: identity.kernelRelease?.slice(0, 256) ?? null,
      },
      auth,
      labels: this.options.labels,
      resume: this.inventory?.resumePoint() ?? null,
      allowRebind: this.options.allowRebind,
    };
  }

  private async welcomed(welcome: WelcomeMessage): Promise<void> {
    if (welcome.protocolVersion !== PROTOCOL_VERSION) {
      this.logger.warn(
        { server: welcome.protocolVersion, agent: PROTOCOL_VERSION },
        'server speaks another protocol version',
      );
    }
    if (welcome.credential !== null) {
      // Kept in memory first: even if the file cannot be written, this process stays enrolled.
      this.credential = welcome.credential;
      try {
        await this.credentials.save(welcome.credential);
      } catch (error) {
        this.logger.error(
          { err: error, file: this.credentials.file },
          'cannot store the credential: this agent will need a new enrollment token after a restart',
        );
      }
    }
    this.inventory?.connected(welcome.resume);
    this.jobs?.connected();
  }

  private receive(message: ServerMessage): void {
    switch (message.type) {
      case 'ack':
        this.inventory?.ack(message.epoch, message.seq);
        return;
      case 'resync':
        this.inventory?.resync(message.reason);
        return;
      case 'job':
        this.jobs?.handle(message);
        return;
      case 'job-cancel':
        // A rebind that has started must finish or roll back; one not started yet is refused by
        // its deadline. There is nothing safe to interrupt.
        this.logger.warn({ jobId: message.jobId }, 'job-cancel ignored: jobs run to completion');
        return;
      default:
        this.logger.debug({ type: message.type }, 'message not handled here');
    }
  }

  /**
   * A fatal error ends the process (docs/protocol.md): retrying unchanged cannot help, and looping
   * on a revoked credential would only fill the server's logs, so the operator (or systemd)
   * decides.
   */
  private fatal(error: ErrorMessage): void {
    void this.stop().finally(() => this.resolveHalt({ code: error.code, message: error.message }));
  }
}
