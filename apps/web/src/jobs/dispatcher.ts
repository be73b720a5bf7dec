/**
 * Delivers jobs to agents, across any number of server processes sharing one database.
 *
 * A process can only reach the agents connected to it, so each one delivers the queued jobs of
 * its own agents' hosts. Claiming is one `SELECT ... FOR UPDATE SKIP LOCKED` and the move to
 * `dispatched` happens under those row locks, so two processes (or two wake-ups in one) never hand
 * out the same job twice; the job id is the agent's idempotency key, so re-sending a job the agent
 * already has is always safe and is how anything lost in flight is recovered.
 *
 * What makes a process look (all of them only hints; the database is the truth):
 *   - an agent connects here (its unfinished jobs are re-sent with the same id, then queued ones);
 *   - wake(hostId) after a job is created (here) or NOTIFY `vfio_fleet_jobs` (from any process);
 *   - a poll every few seconds, for a notification lost while a LISTEN connection was down.
 *
 * Leases: a dispatched/running job names the process that holds its agent (`lease_owner`) and is
 * renewed while that agent stays connected. A lapsed lease means no process holds the agent; the
 * job then waits, untouched, for the agent to reconnect anywhere (re-delivered there) or for its
 * deadline (the expiry sweep).
 */
import type {
  JobAcceptedMessage,
  JobMessage,
  JobResultMessage,
  JobStepMessage,
  ServerMessage,
} from '@vfio-fleet/core';
import {
  type Database,
  hosts,
  type JobRow,
  type JobState,
  jobs,
  type Listen,
  notify,
  textArrayLiteral,
  type Unlisten,
} from '@vfio-fleet/db';
import { and, asc, eq, exists, gt, inArray, isNull, lt, or, sql } from 'drizzle-orm';
import { alias } from 'drizzle-orm/pg-core';
import { errorMessage } from '../errors';
import type { Logger } from '../logger';
import { afterJobTerminal, recordJobEvent, terminalStateOf, transitionJob } from './transitions';

/** NOTIFY channel: payload = a host id whose queued jobs may now be deliverable, or `*` for all. */
export const JOBS_CHANNEL = 'vfio_fleet_jobs';
/** NOTIFY channel: payload = a job id whose cancellation the process holding its agent should send. */
export const JOB_CANCEL_CHANNEL = 'vfio_fleet_job_cancel';
/** Payload on JOBS_CHANNEL meaning "every host". */
export const ALL_HOSTS = '*';

export const DEFAULT_LEASE_SECONDS = 60;
export const DEFAULT_POLL_MS = 3_000;
/**
 * How long after its deadline a running job whose agent is connected nowhere is given to report
 * before it expires: the agent may be restarting, and a result it kept arrives when it is back.
 */
export const DEFAULT_RUNNING_GRACE_SECONDS = 300;
/** Jobs claimed per statement; the loop goes on while there are more. */
const CLAIM_BATCH = 100;
/** Expired per sweep round, each in its own short transaction. */
const EXPIRE_BATCH = 200;
/** Above this many distinct hosts, one `*` notification replaces one per host. */
const MAX_HOST_NOTIFICATIONS = 20;

const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type AgentJobMessage = JobAcceptedMessage | JobStepMessage | JobResultMessage;

/** What the gateway tells the agent about a job message: nothing, or a non-fatal error. */
export type JobMessageOutcome = { ok: true } | { ok: false; message: string };

export interface JobDispatcherDeps {
  db: Database;
  logger: Logger;
  /** This process's id, written to `lease_owner` (random per process start). */
  instanceId: string;
  leaseSeconds?: number;
  /** Poll, lease renewal and expiry sweep period. */
  pollMs?: number;
  runningGraceSeconds?: number;
  /** The DbHandle's listen; without it, other processes are only seen by polling. */
  listen?: Listen;
  now?: () => Date;
}

interface AgentLink {
  send: (message: ServerMessage) => void;
  /** When it connected here: a later hosts.connected_at means a newer connection elsewhere. */
  since: Date;
}

interface HostDelivery {
  /** Another round was asked for while one ran. */
  again: boolean;
  /** The next round re-sends the host's unfinished jobs (the agent just connected). */
  redeliver: boolean;
  done: Promise<void>;
}

export class JobDispatcher {
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly instanceId: string;
  private readonly leaseMs: number;
  private readonly pollMs: number;
  private readonly graceMs: number;
  private readonly listen: Listen | undefined;
  private readonly now: () => Date;
  /** Agents connected to this process, by host id: how to send them a message. */
  private readonly agents = new Map<string, AgentLink>();
  private readonly deliveries = new Map<string, HostDelivery>();
  private readonly unlisteners: Unlisten[] = [];
  private timer: NodeJS.Timeout | null = null;
  private lastRenewal = 0;
  private ticking: Promise<void> | null = null;
  private stopped = true;

  constructor(deps: JobDispatcherDeps) {
    this.db = deps.db;
    this.logger = deps.logger.child({ component: 'job-dispatcher', instanceId: deps.instanceId });
    this.instanceId = deps.instanceId;
    this.leaseMs = (deps.leaseSeconds ?? DEFAULT_LEASE_SECONDS) * 1000;
    this.pollMs = deps.pollMs ?? DEFAULT_POLL_MS;
    this.graceMs = (deps.runningGraceSeconds ?? DEFAULT_RUNNING_GRACE_SECONDS) * 1000;
    this.listen = deps.listen;
    this.now = deps.now ?? (() => new Date());
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    if (this.listen !== undefined) {
      this.unlisteners.push(
        await this.listen(JOBS_CHANNEL, (payload) => this.onJobsNotification(payload)),
        await this.listen(JOB_CANCEL_CHANNEL, (payload) => this.onCancelNotification(payload)),
      );
    }
    this.timer = setInterval(() => this.tick(), this.pollMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const unlisteners = this.unlisteners.splice(0);
    await Promise.allSettled(unlisteners.map((unlisten) => unlisten()));
    await Promise.allSettled([
      ...(this.ticking === null ? [] : [this.ticking]),
      ...[...this.deliveries.values()].map((d) => d.done),
    ]);
    // Leases are left as they are: the agents reconnect to another process (or this one when it
    // is back), which re-delivers; nothing here knows better.
    this.agents.clear();
  }

  /** Host ids whose agent is connected to this process. */
  get connectedHosts(): string[] {
    return [...this.agents.keys()];
  }

  // --- the gateway's side ---------------------------------------------------------------------

  /** An agent finished its hello here: re-send its unfinished jobs (same ids), then queued ones. */
  agentConnected(
    hostId: string,
    send: (message: ServerMessage) => void,
    options: { newHost?: boolean } = {},
  ): void {
    this.agents.set(hostId, { send, since: this.now() });
    // A host enrolled this instant has no job to re-send or claim: skipping the two queries keeps
    // an enrollment storm cheaper (a job created in between is found by the next poll).
    if (options.newHost !== true) this.schedule(hostId, true);
  }

  agentDisconnected(hostId: string, send?: (message: ServerMessage) => void): void {
    // A newer connection of the same agent may already have replaced this one.
    if (send !== undefined && this.agents.get(hostId)?.send !== send) return;
    this.agents.delete(hostId);
  }

  /**
   * A job message from the agent of `hostId` (the credential's host). Only jobs of that host in
   * the right state are touched; anything else (a replay, a forged id, another host's job) changes
   * nothing and is answered with a non-fatal error. The agent is told nothing on success: the
   * protocol has no ack for results.
   */
  async handleAgentMessage(hostId: string, message: AgentJobMessage): Promise<JobMessageOutcome> {
    const log = this.logger.child({ hostId, jobId: message.jobId, type: message.type });
    const job = await this.findJob(message.jobId);
    if (job === null || job.hostId !== hostId) {
      log.warn('job message for a job this host does not have: ignored');
      return {
        ok: false,
        message: `${message.type} for job ${message.jobId}: this host has no such job; nothing was changed`,
      };
    }
    switch (message.type) {
      case 'job-accepted':
        return this.onAccepted(job, log);
      case 'job-step':
        return this.onStep(job, message, log);
      case 'job-result':
        return this.onResult(job, message, log);
    }
  }

  // --- the API's side -------------------------------------------------------------------------

  /** A job of `hostId` may be deliverable now: deliver here if its agent is here, and tell the others. */
  wake(hostId: string): void {
    if (this.agents.has(hostId)) this.schedule(hostId, false);
    this.publish([hostId]);
  }

  /** Sends job-cancel to the job's agent: directly when it is connected here, else via NOTIFY. */
  requestCancel(job: JobRow): void {
    const link = this.agents.get(job.hostId);
    if (link !== undefined) {
      link.send({ type: 'job-cancel', jobId: job.id });
      return;
    }
    notify(this.db, JOB_CANCEL_CHANNEL, job.id).catch((error: unknown) =>
      this.logger.warn({ err: error, jobId: job.id }, 'could not notify the job cancellation'),
    );
  }

  // --- delivery -------------------------------------------------------------------------------

  /** Runs delivery rounds for one host one at a time; a request during a round adds one more. */
  private schedule(hostId: string, redeliver: boolean): void {
    if (this.stopped) return;
    const current = this.deliveries.get(hostId);
    if (current !== undefined) {
      current.again = true;
      current.redeliver ||= redeliver;
      return;
    }
    const delivery: HostDelivery = { again: true, redeliver, done: Promise.resolve() };
    this.deliveries.set(hostId, delivery);
    delivery.done = (async () => {
      while (delivery.again && !this.stopped && this.agents.has(hostId)) {
        delivery.again = false;
        const resend = delivery.redeliver;
        delivery.redeliver = false;
        try {
          if (resend) await this.redeliver(hostId);
          await this.deliverQueued(hostId);
        } catch (error) {
          // The poll comes back to it; a reconnecting agent gets its re-delivery then too.
          if (resend) delivery.redeliver = true;
          this.logger.error({ err: error, hostId }, 'job delivery failed');
          break;
        }
      }
    })().finally(() => {
      if (this.deliveries.get(hostId) === delivery) this.deliveries.delete(hostId);
    });
  }

  /** Claims the host's deliverable queued jobs and sends them, until none is left. */
  private async deliverQueued(hostId: string): Promise<void> {
    for (;;) {
      const claimed = await this.claim(hostId);
      for (const job of claimed) {
        this.send(hostId, jobMessage(job));
        this.logger.info(
          { jobId: job.id, hostId, attempt: job.attempt, address: job.address },
          'job dispatched',
        );
      }
      if (claimed.length < CLAIM_BATCH) return;
    }
  }

  /**
   * One transaction: lock the deliverable queued jobs (skipping any another process holds), move
   * each to dispatched under that lock. Deliverable: queued, before its deadline, and not waiting
   * for a canary that has not succeeded.
   */
  private async claim(hostId: string): Promise<JobRow[]> {
    const now = this.now();
    const leaseUntil = new Date(now.getTime() + this.leaseMs);
    const canary = alias(jobs, 'canary');
    return this.db.transaction(async (tx) => {
      const candidates = await tx
        .select({ id: jobs.id, attempt: jobs.attempt })
        .from(jobs)
        .where(
          and(
            eq(jobs.hostId, hostId),
            eq(jobs.state, 'queued'),
            gt(jobs.deadline, now),
            or(
              isNull(jobs.canaryOf),
              exists(
                tx
                  .select({ one: sql`1` })
                  .from(canary)
                  .where(and(eq(canary.id, jobs.canaryOf), eq(canary.state, 'succeeded'))),
              ),
            ),
          ),
        )
        .orderBy(asc(jobs.createdAt))
        .limit(CLAIM_BATCH)
        .for('update', { of: jobs, skipLocked: true });
      const claimed: JobRow[] = [];
      for (const candidate of candidates) {
        const attempt = candidate.attempt + 1;
        const row = await transitionJob(
          tx,
          candidate.id,
          ['queued'],
          'dispatched',
          {
            message: `sent to the agent (attempt ${attempt})`,
            data: { instanceId: this.instanceId, attempt },
          },
          { leaseUntil, leaseOwner: this.instanceId, dispatchedAt: now, attempt },
        );
        if (row !== null) claimed.push(row);
      }
      return claimed;
    });
  }

  /**
   * Re-sends every dispatched or running job of the host with the same id, and takes over their
   * lease. The agent answers from its job store: the stored result, or job-accepted while it
   * still runs; it never runs a job id twice.
   */
  private async redeliver(hostId: string): Promise<void> {
    await this.takeOver([hostId], false, 'after the agent connected');
  }

  /**
   * Takes over (lease and owner) and re-sends the unfinished jobs of these hosts, all of them or
   * only those whose lease lapsed: a lapsed lease on a host whose agent is here means the process
   * that sent it lost the agent (or sent it down a connection the agent had already left).
   */
  private async takeOver(hostIds: string[], lapsedOnly: boolean, why: string): Promise<void> {
    if (hostIds.length === 0) return;
    const now = this.now();
    const rows = await this.db.transaction(async (tx) => {
      const taken = await tx
        .update(jobs)
        .set({
          leaseUntil: new Date(now.getTime() + this.leaseMs),
          leaseOwner: this.instanceId,
          attempt: sql`${jobs.attempt} + 1`,
        })
        .where(
          and(
            sql`${jobs.hostId} = any(${textArrayLiteral(hostIds)}::uuid[])`,
            inArray(jobs.state, ['dispatched', 'running']),
            lapsedOnly ? or(isNull(jobs.leaseUntil), lt(jobs.leaseUntil, now)) : undefined,
          ),
        )
        .returning();
      for (const row of taken) {
        await recordJobEvent(
          tx,
          row.id,
          row.state,
          `re-sent with the same id ${why} (attempt ${row.attempt})`,
          { instanceId: this.instanceId, attempt: row.attempt },
        );
      }
      return taken;
    });
    for (const job of rows) {
      this.send(job.hostId, jobMessage(job));
      this.logger.info(
        { jobId: job.id, hostId: job.hostId, state: job.state, why },
        'job re-delivered',
      );
    }
  }

  private send(hostId: string, message: ServerMessage): void {
    // Gone since the claim: the job stays dispatched and is re-sent when the agent is back.
    this.agents.get(hostId)?.send(message);
  }

  // --- agent messages -------------------------------------------------------------------------

  private async onAccepted(job: JobRow, log: Logger): Promise<JobMessageOutcome> {
    if (job.state !== 'dispatched') {
      // The agent answers every re-delivery with job-accepted, so this is routine for a job
      // already running (or finished meanwhile): nothing to do and nothing to complain about.
      log.debug({ state: job.state }, 'job-accepted for a job not waiting for it');
      return { ok: true };
    }
    const moved = await transitionJob(
      this.db,
      job.id,
      ['dispatched'],
      'running',
      { message: 'accepted by the agent' },
      { acceptedAt: this.now() },
    );
    log.info({ moved: moved !== null }, 'job accepted by the agent');
    return { ok: true };
  }

  private async onStep(
    job: JobRow,
    message: JobStepMessage,
    log: Logger,
  ): Promise<JobMessageOutcome> {
    if (job.state !== 'dispatched' && job.state !== 'running' && job.state !== 'expired') {
      log.warn({ state: job.state }, 'job-step for a finished job: ignored');
      return {
        ok: false,
        message: `job-step for job ${job.id}: the job is already ${job.state}; nothing was changed`,
      };
    }
    const { step } = message;
    const target = 'path' in step ? ` ${step.path}` : 'module' in step ? ` ${step.module}` : '';
    const value = 'value' in step ? ` <- ${JSON.stringify(step.value)}` : '';
    const error = message.error === null ? '' : `: ${message.error.errno} ${message.error.message}`;
    const late = job.state === 'expired' ? 'late ' : '';
    await recordJobEvent(
      this.db,
      job.id,
      job.state,
      `${late}${message.phase} step ${message.index} ${step.action}${target}${value}: ${message.status}${error}`,
      {
        phase: message.phase,
        index: message.index,
        action: step.action,
        address: 'address' in step ? step.address : null,
        path: 'path' in step ? step.path : null,
        value: 'value' in step ? step.value : null,
        status: message.status,
        startedAt: message.startedAt,
        durationMs: message.durationMs,
        error: message.error,
        step,
      },
    );
    return { ok: true };
  }

  private async onResult(
    job: JobRow,
    message: JobResultMessage,
    log: Logger,
  ): Promise<JobMessageOutcome> {
    const outcome = terminalStateOf(message);
    const applied = await this.db.transaction(async (tx) => {
      const row = await transitionJob(
        tx,
        job.id,
        ['dispatched', 'running'],
        outcome.state,
        {
          message: `agent reported ${message.status}${outcome.reasonCode === null ? '' : ` (${outcome.reasonCode})`}`,
          data: { status: message.status, reason: message.reason, failedStep: message.failedStep },
        },
        {
          result: message,
          finishedAt: this.now(),
          reasonCode: outcome.reasonCode,
          reasonMessage: outcome.reasonMessage,
          leaseUntil: null,
        },
      );
      if (row !== null) {
        await afterJobTerminal(tx, row);
        return { row, late: false };
      }
      // Expired while the agent was away: what the host went through still matters to whoever
      // re-scans it, so the result is kept as an event, without reviving the job.
      const [current] = await tx.select().from(jobs).where(eq(jobs.id, job.id));
      if (current?.state === 'expired') {
        await recordJobEvent(
          tx,
          job.id,
          'expired',
          `late result: agent reported ${message.status}`,
          {
            result: message,
          },
        );
        return { row: null, late: true };
      }
      return { row: null, late: false, state: current?.state };
    });
    if (applied.row !== null) {
      log.info({ state: applied.row.state, reasonCode: applied.row.reasonCode }, 'job finished');
      await this.wakeDependents(applied.row);
      return { ok: true };
    }
    if (applied.late) {
      log.warn({ status: message.status }, 'late result for an expired job: recorded, not applied');
      return { ok: true };
    }
    log.warn({ state: applied.state }, 'job-result for a job not waiting for one: ignored');
    return {
      ok: false,
      message: `job-result for job ${job.id}: the job is ${applied.state ?? 'gone'}, not dispatched or running; nothing was changed`,
    };
  }

  /**
   * A finished job may unblock others: jobs of the same host (once its group lock is free on the
   * agent) and a canary's dependents, which may be on any host of any process.
   */
  private async wakeDependents(job: JobRow): Promise<void> {
    const dependents = await this.db
      .selectDistinct({ hostId: jobs.hostId })
      .from(jobs)
      .where(and(eq(jobs.canaryOf, job.id), eq(jobs.state, 'queued')));
    const hostIds = [...new Set([job.hostId, ...dependents.map((d) => d.hostId)])];
    for (const hostId of hostIds) if (this.agents.has(hostId)) this.schedule(hostId, false);
    if (dependents.length > 0) this.publish(hostIds);
  }

  private async findJob(jobId: string): Promise<JobRow | null> {
    // Job ids on the wire are any protocol id; only a uuid can name a row (and a malformed one
    // would be a database error rather than "no such job").
    if (!UUID_PATTERN.test(jobId)) return null;
    const [row] = await this.db.select().from(jobs).where(eq(jobs.id, jobId));
    return row ?? null;
  }

  // --- notifications --------------------------------------------------------------------------

  /** Tells every process (this one included; it finds nothing new) to look at these hosts. */
  private publish(hostIds: readonly string[]): void {
    const payloads = hostIds.length > MAX_HOST_NOTIFICATIONS ? [ALL_HOSTS] : hostIds;
    for (const payload of payloads) {
      notify(this.db, JOBS_CHANNEL, payload).catch((error: unknown) =>
        this.logger.warn({ err: error }, 'could not notify the other server processes'),
      );
    }
  }

  private onJobsNotification(payload: string): void {
    if (payload === ALL_HOSTS) {
      this.deliverPending().catch((error: unknown) =>
        this.logger.error({ err: error }, 'job delivery failed'),
      );
    } else if (this.agents.has(payload)) {
      this.schedule(payload, false);
    }
  }

  private onCancelNotification(payload: string): void {
    if (!UUID_PATTERN.test(payload) || this.agents.size === 0) return;
    this.findJob(payload).then(
      (job) => {
        if (job === null || (job.state !== 'dispatched' && job.state !== 'running')) return;
        this.agents.get(job.hostId)?.send({ type: 'job-cancel', jobId: job.id });
      },
      (error: unknown) =>
        this.logger.warn({ err: error, jobId: payload }, 'could not look up a cancelled job'),
    );
  }

  // --- periodic work --------------------------------------------------------------------------

  private tick(): void {
    if (this.ticking !== null || this.stopped) return;
    this.ticking = this.runTick()
      .catch((error: unknown) =>
        this.logger.error({ err: error }, `job dispatcher tick failed: ${errorMessage(error)}`),
      )
      .finally(() => {
        this.ticking = null;
      });
  }

  /**
   * Runs one poll: drop connections superseded elsewhere, renew leases, take over lapsed ones,
   * expire what is overdue, deliver anything a lost NOTIFY missed.
   */
  async runTick(): Promise<void> {
    await this.dropSuperseded();
    const nowMs = this.now().getTime();
    // Renewing every quarter of a lease keeps it well ahead of a slow or missed tick without a
    // write per poll.
    if (nowMs - this.lastRenewal >= this.leaseMs / 4) {
      await this.renewLeases();
      this.lastRenewal = nowMs;
    }
    await this.takeOver([...this.agents.keys()], true, 'after its lease lapsed');
    await this.expire();
    await this.deliverPending();
  }

  /**
   * Forgets agents that have connected again to another process since they connected here (a
   * half-open socket this process has not noticed yet, e.g. after a network partition): jobs
   * sent down it would be lost until the deadline. Their leases then lapse, and the process that
   * holds the live connection takes the jobs over.
   */
  private async dropSuperseded(): Promise<void> {
    if (this.agents.size === 0) return;
    const rows = await this.db
      .select({ id: hosts.id, connectedAt: hosts.connectedAt })
      .from(hosts)
      .where(sql`${hosts.id} = any(${textArrayLiteral([...this.agents.keys()])}::uuid[])`);
    for (const row of rows) {
      const link = this.agents.get(row.id);
      if (link !== undefined && row.connectedAt !== null && row.connectedAt > link.since) {
        this.agents.delete(row.id);
        this.logger.warn({ hostId: row.id }, 'agent connected to another process since: dropped');
      }
    }
  }

  /** Schedules delivery for the connected hosts that have queued jobs before their deadline. */
  private async deliverPending(): Promise<void> {
    if (this.agents.size === 0) return;
    // One query for every host here, instead of a claim transaction per host and poll.
    const pending = await this.db
      .selectDistinct({ hostId: jobs.hostId })
      .from(jobs)
      .where(
        and(
          sql`${jobs.hostId} = any(${textArrayLiteral([...this.agents.keys()])}::uuid[])`,
          eq(jobs.state, 'queued'),
          gt(jobs.deadline, this.now()),
        ),
      );
    for (const { hostId } of pending) this.schedule(hostId, false);
  }

  /** Extends the lease of every unfinished job whose agent is connected here. */
  async renewLeases(): Promise<number> {
    const hostIds = [...this.agents.keys()];
    if (hostIds.length === 0) return 0;
    const renewed = await this.db
      .update(jobs)
      .set({ leaseUntil: new Date(this.now().getTime() + this.leaseMs) })
      .where(
        and(
          sql`${jobs.hostId} = any(${textArrayLiteral(hostIds)}::uuid[])`,
          inArray(jobs.state, ['dispatched', 'running']),
          eq(jobs.leaseOwner, this.instanceId),
        ),
      )
      .returning({ id: jobs.id });
    return renewed.length;
  }

  /**
   * Expires overdue jobs; safe with every process sweeping at once, as each move is a conditional
   * UPDATE that only one of them wins (the state is re-checked; the deadline never changes):
   *   - queued past the deadline: 'host-offline' when the host is offline (it never got the job),
   *     else 'deadline-passed';
   *   - dispatched or running, past deadline + grace, with a lapsed lease (no process holds its
   *     agent): 'no-answer' / 'no-result'. A dispatched job is not expired at the deadline itself:
   *     the agent may have received it just before, be running it, and have its job-accepted still
   *     in flight or held back by a lost connection — expiring it then would record a job that ran
   *     as one that did not. A connected agent answers a late job itself (refused, deadline passed),
   *     so the grace only matters for agents that are gone. A result that comes after expiry is
   *     recorded as an event (see onResult).
   */
  async expire(): Promise<number> {
    const now = this.now();
    const graceCutoff = new Date(now.getTime() - this.graceMs);
    const overdue = await this.db
      .select({ id: jobs.id, state: jobs.state, hostState: hosts.state })
      .from(jobs)
      .innerJoin(hosts, eq(hosts.id, jobs.hostId))
      .where(
        or(
          and(eq(jobs.state, 'queued'), lt(jobs.deadline, now)),
          and(
            inArray(jobs.state, ['dispatched', 'running']),
            lt(jobs.deadline, graceCutoff),
            or(isNull(jobs.leaseUntil), lt(jobs.leaseUntil, now)),
          ),
        ),
      )
      .limit(EXPIRE_BATCH);
    let expired = 0;
    for (const candidate of overdue) {
      const reason = expiryReason(candidate.state, candidate.hostState === 'offline');
      const row = await this.db.transaction(async (tx) => {
        const moved = await transitionJob(
          tx,
          candidate.id,
          [candidate.state],
          'expired',
          { message: reason.message, data: { reasonCode: reason.code } },
          {
            reasonCode: reason.code,
            reasonMessage: reason.message,
            finishedAt: now,
            leaseUntil: null,
          },
        );
        if (moved !== null) await afterJobTerminal(tx, moved);
        return moved;
      });
      if (row !== null) {
        expired += 1;
        this.logger.info({ jobId: row.id, hostId: row.hostId, reason: reason.code }, 'job expired');
      }
    }
    return expired;
  }
}

function expiryReason(state: JobState, hostOffline: boolean): { code: string; message: string } {
  if (state === 'dispatched') {
    return {
      code: 'no-answer',
      message:
        'the job was sent to the agent but it never answered by the deadline; re-scan the host to see whether it ran',
    };
  }
  if (state === 'running') {
    return {
      code: 'no-result',
      message: 'the agent accepted the job but no result came by the deadline; re-scan the host',
    };
  }
  if (hostOffline) {
    return { code: 'host-offline', message: "the host was offline until the job's deadline" };
  }
  return {
    code: 'deadline-passed',
    message: "the job's deadline passed before the agent accepted it",
  };
}

function jobMessage(job: JobRow): JobMessage {
  return {
    type: 'job',
    jobId: job.id,
    address: job.address,
    target: job.target,
    force: job.force,
    persist: job.persist,
    deadline: job.deadline.toISOString(),
  };
}
