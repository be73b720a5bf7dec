/**
 * The server's own host as a fleet member: `npm start` runs a read-only `vfio-fleet-agent run`
 * next to the server, so a fresh install shows one host (this one) with its devices instead of an
 * empty fleet.
 *
 * - Read-only: never `--allow-rebind`. The server's machine is the one host a rebind job must not
 *   be able to touch by accident; an operator who wants that runs the agent as a service instead.
 * - Enrollment: the state dir keeps the agent's credential (`credential.json`, written by the
 *   agent's CredentialStore). Without one, a one-use enrollment token (10 minutes) is created in
 *   the database and passed in `VFIO_FLEET_TOKEN` (an argument would show in every user's `ps`).
 * - The agent exits 3 when the server refuses it for good (a fatal error: typically the credential
 *   is unknown because the database was wiped while the state dir was kept). Its credential is
 *   then deleted and it enrolls again, once; a second refusal in a row is logged and left alone.
 *   Other exits are restarted with a growing delay.
 * - Its log lines (pino JSON on stderr) go into the server's log under `component: local-agent`.
 * - It dies with the server: fd 3 is a pipe only the server holds (`--parent-fd 3`), which ends
 *   when the server does, `kill -9` included. An orphan of an older server still holding the
 *   state dir is stopped before a new agent starts (local-agent-orphan.ts); the agent itself
 *   refuses to run twice on one state dir. The state dir is kept private (0700, 0600 files).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Database } from '@vfio-fleet/db';
import { makePrivate } from '@vfio-fleet/local-state';
import { z } from 'zod';
import { createEnrollmentToken } from './gateway/credentials';
import { claimStateDir } from './local-agent-orphan';
import type { Logger } from './logger';

/** The agent's launcher in this checkout (it loads the built bundle, apps/agent/dist). */
export const AGENT_BIN = path.resolve(import.meta.dirname, '../../agent/bin/vfio-fleet-agent.mjs');
/** Where the agent keeps its credential inside the state dir (apps/agent's CREDENTIAL_FILE). */
export const CREDENTIAL_FILE = 'credential.json';
/** `vfio-fleet-agent run`'s exit status when the server ended its session with a fatal error. */
export const EXIT_REFUSED = 3;

export interface LocalAgentOptions {
  /** The server's own URL, as the agent should dial it (e.g. http://127.0.0.1:3000). */
  serverUrl: string;
  stateDir: string;
  db: Database;
  logger: Logger;
  /** `--root`: read this tree instead of the live host (tests use a fixture tree). */
  root?: string;
  /** `--interval` in seconds (the agent's default when unset). */
  intervalSeconds?: number;
  /** First restart delay; doubles up to maxRestartDelayMs. */
  restartDelayMs?: number;
  maxRestartDelayMs?: number;
}

export interface LocalAgent {
  /** The running child's pid, or null between restarts. */
  readonly pid: number | null;
  /** SIGTERM to the agent, and waits for it (SIGKILL after 10 s). */
  stop(): Promise<void>;
}

/** A run that lasted this long was working: the next failure starts the backoff (and the re-enroll) afresh. */
const HEALTHY_RUN_MS = 60_000;
const STOP_GRACE_MS = 10_000;

/** The fields of an agent log line the server's own logger writes itself. */
const agentLogLineSchema = z.looseObject({ level: z.number().int(), msg: z.string().optional() });
const PINO_OWN_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

export function startLocalAgent(options: LocalAgentOptions): LocalAgent {
  const logger = options.logger.child({ component: 'local-agent' });
  const restartDelayMs = options.restartDelayMs ?? 1_000;
  const maxRestartDelayMs = options.maxRestartDelayMs ?? 60_000;
  const credentialFile = path.join(options.stateDir, CREDENTIAL_FILE);
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stopping = false;
  let restartTimer: NodeJS.Timeout | null = null;
  let failures = 0;
  let reenrolled = false;

  const launch = async (): Promise<void> => {
    if (stopping) return;
    const args = [
      AGENT_BIN,
      'run',
      '--server',
      options.serverUrl,
      '--state-dir',
      options.stateDir,
      '--label',
      'role=local',
      '--parent-fd',
      '3',
    ];
    if (options.root !== undefined) args.push('--root', options.root);
    if (options.intervalSeconds !== undefined)
      args.push('--interval', String(options.intervalSeconds));
    const fixed = await makePrivate(options.stateDir);
    if (fixed > 0)
      logger.warn({ stateDir: options.stateDir, fixed }, 'fixed modes in the state dir');
    const claim = await claimStateDir(options.stateDir, logger, STOP_GRACE_MS);
    if (claim.kind === 'busy') {
      failures += 1;
      const delay = backoff();
      logger.error({ restartInMs: delay }, `not starting the local agent: ${claim.message}`);
      schedule(delay);
      return;
    }
    if (stopping) return;
    const tokenEnv: Record<string, string> = {};
    if (!existsSync(credentialFile)) {
      const { token } = await createEnrollmentToken(options.db, {
        label: 'local agent',
        ttlSeconds: 600,
        maxUses: 1,
      });
      tokenEnv.VFIO_FLEET_TOKEN = token;
      logger.info({ stateDir: options.stateDir }, 'enrolling the local agent');
    }
    if (stopping) return;
    const started = Date.now();
    const proc = spawn(process.execPath, args, {
      // The agent reads the live host read-only; it needs no secrets of the server's environment.
      env: {
        PATH: process.env.PATH,
        NODE_ENV: process.env.NODE_ENV,
        NO_COLOR: '1',
        VFIO_FLEET_LOG_LEVEL: 'info',
        ...tokenEnv,
      },
      // fd 3: the pipe whose end tells the agent its server is gone (never written).
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    });
    child = proc;
    logger.info({ agentPid: proc.pid, root: options.root ?? '/' }, 'local agent started');
    forwardLines(proc.stdout, logger);
    forwardLines(proc.stderr, logger);
    exited = new Promise<void>((resolve) => {
      let done = false;
      proc.once('exit', (code, signal) => {
        if (done) return;
        done = true;
        child = null;
        resolve();
        onExit(code, signal, Date.now() - started);
      });
      // A process that could not be spawned at all emits 'error' and maybe never 'exit'.
      proc.once('error', (error) => {
        logger.error({ err: error }, 'local agent could not be started');
        if (done || proc.pid !== undefined) return;
        done = true;
        child = null;
        resolve();
        onExit(null, null, Date.now() - started);
      });
    });
  };

  const schedule = (delayMs: number): void => {
    if (stopping) return;
    restartTimer = setTimeout(() => {
      restartTimer = null;
      launch().catch((error: unknown) => {
        // The database is down (the token could not be created), say: try again later.
        logger.error({ err: error }, 'starting the local agent failed');
        failures += 1;
        schedule(backoff());
      });
    }, delayMs);
  };

  const backoff = (): number =>
    Math.min(maxRestartDelayMs, restartDelayMs * 2 ** Math.max(0, failures - 1));

  const onExit = (code: number | null, signal: NodeJS.Signals | null, ranMs: number): void => {
    if (stopping) {
      logger.info({ code, signal }, 'local agent stopped');
      return;
    }
    if (ranMs >= HEALTHY_RUN_MS) {
      failures = 0;
      reenrolled = false;
    }
    if (code === EXIT_REFUSED) {
      if (reenrolled) {
        logger.error(
          { code },
          'the server refused the local agent again after a fresh enrollment; not restarting it',
        );
        return;
      }
      // Most likely the database no longer knows the stored credential (wiped, or another
      // database): the credential is worthless, so it is dropped and the agent enrolls afresh.
      reenrolled = true;
      logger.warn({ code }, 'the server refused the local agent; enrolling it again');
      rm(credentialFile, { force: true }).then(
        () => schedule(0),
        (error: unknown) =>
          logger.error({ err: error }, 'removing the local agent credential failed'),
      );
      return;
    }
    failures += 1;
    const delay = backoff();
    logger.warn({ code, signal, restartInMs: delay }, 'local agent exited; restarting');
    schedule(delay);
  };

  schedule(0);

  return {
    get pid() {
      return child?.pid ?? null;
    },
    async stop() {
      stopping = true;
      if (restartTimer !== null) clearTimeout(restartTimer);
      restartTimer = null;
      const running = child;
      if (running === null) return;
      running.kill('SIGTERM');
      const killer = setTimeout(() => running.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** The agent's pino lines into the server's log, at their own level; anything else as info. */
function forwardLines(stream: NodeJS.ReadableStream | null, logger: Logger): void {
  if (stream === null) return;
  const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
  lines.on('line', (line) => {
    if (line.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      logger.info({ line }, 'local agent output');
      return;
    }
    const parsed = agentLogLineSchema.safeParse(json);
    if (!parsed.success) {
      logger.info({ line }, 'local agent output');
      return;
    }
    const fields: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(parsed.data)) {
      if (!PINO_OWN_FIELDS.has(key)) fields[key] = value;
    }
    const msg = parsed.data.msg ?? '';
    const level = parsed.data.level;
    if (level >= 50) logger.error(fields, msg);
    else if (level >= 40) logger.warn(fields, msg);
    else if (level >= 30) logger.info(fields, msg);
    else logger.debug(fields, msg);
  });
}

/** The URL the local agent dials: the listening address, or loopback when it listens on all. */
export function localServerUrl(listeningUrl: string): string {
  const url = new URL(listeningUrl);
  if (url.hostname === '0.0.0.0') url.hostname = '127.0.0.1';
  else if (url.hostname === '[::]') url.hostname = '[::1]';
  return url.origin;
}
