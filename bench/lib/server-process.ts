// Starts and drives a server child (server-child.ts): the real server or the bare baseline, in
// its own process so that its memory, CPU and event loop are measured apart from the load
// generator's.
import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import type { ChildReply, ChildRequest, ChildStats, JobSpec, JobStatRow } from './server-protocol';

const CHILD = path.join(import.meta.dirname, 'server-child.ts');

type Pending = { resolve: (value: unknown) => void; reject: (error: Error) => void };
type RequestBody = ChildRequest extends infer R
  ? R extends { id: number }
    ? Omit<R, 'id'>
    : never
  : never;

export interface ServerProcessOptions {
  mode: 'fleet' | 'bare';
  /** The database's env (bench-db.ts); ignored by the bare server. */
  dbEnv?: Record<string, string>;
  /** 0: any free port (a restart passes the old one so agents find it again). */
  port?: number;
  heartbeatSeconds?: number;
}

export class ServerProcess {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
    readonly options: ServerProcessOptions,
  ) {
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    child.on('message', (reply: ChildReply) => {
      const waiter = this.pending.get(reply.id);
      if (waiter === undefined) return;
      this.pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(new Error(`server child: ${reply.error}`));
    });
    child.once('exit', (code, signal) => {
      for (const waiter of this.pending.values()) {
        waiter.reject(new Error(`the server child exited (${code ?? signal})`));
      }
      this.pending.clear();
    });
  }

  get port(): number {
    return Number(new URL(this.url).port);
  }

  get wsUrl(): string {
    return `${this.url.replace('http', 'ws')}/api/agent`;
  }

  static async start(options: ServerProcessOptions): Promise<ServerProcess> {
    const env: NodeJS.ProcessEnv = { ...process.env };
    // The database is the one given, never one inherited from the bench's own environment.
    delete env.DATABASE_URL;
    delete env.VFIO_FLEET_DATA_DIR;
    Object.assign(env, options.dbEnv, {
      BENCH_SERVER_MODE: options.mode,
      BENCH_SERVER_PORT: String(options.port ?? 0),
      BENCH_HEARTBEAT_SECONDS: String(options.heartbeatSeconds ?? 10),
    });
    const child = fork(CHILD, [], {
      execArgv: ['--expose-gc', '--import', 'tsx'],
      env,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const url = await new Promise<string>((resolve, reject) => {
      const onExit = (code: number | null) =>
        reject(new Error(`the ${options.mode} server child exited during start (${code})`));
      child.once('exit', onExit);
      child.once('message', (reply: ChildReply) => {
        child.off('exit', onExit);
        if (reply.ok) resolve((reply.value as { url: string }).url);
        else reject(new Error(reply.error));
      });
    });
    return new ServerProcess(child, url, options);
  }

  request<T>(body: RequestBody): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.child.send({ ...body, id } as ChildRequest);
    });
  }

  stats(reset = false): Promise<ChildStats> {
    return this.request<ChildStats>({ cmd: 'stats', reset });
  }

  enrollmentToken(): Promise<string> {
    return this.request<string>({ cmd: 'token' });
  }

  createJobs(jobs: JobSpec[]): Promise<string[]> {
    return this.request<string[]>({ cmd: 'create-jobs', jobs });
  }

  jobStats(ids: string[]): Promise<JobStatRow[]> {
    return this.request<JobStatRow[]>({ cmd: 'job-stats', ids });
  }

  count(since?: Date): Promise<{ devices: number; onlineHosts: number }> {
    return this.request({ cmd: 'count', since: since?.toISOString() });
  }

  /** SIGTERM (the server's clean shutdown), SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Stops this one and starts the same server again on the same port (the reconnect storm). */
  async restart(): Promise<ServerProcess> {
    await this.stop();
    return ServerProcess.start({ ...this.options, port: this.port });
  }
}
