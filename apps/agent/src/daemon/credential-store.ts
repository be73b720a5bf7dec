/**
 * The agent's per-host credential, `<stateDir>/credential.json`. It is the only secret the agent
 * keeps: whoever reads it can impersonate this host to the server, so the file is created 0600
 * (inside a 0700 state dir) and replaced atomically, so a crash mid-write never leaves a host with
 * half a credential and no way back except re-enrolment.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { AgentError } from '../errors';
import type { Logger } from '../logger';

export const CREDENTIAL_FILE = 'credential.json';

const storedCredentialSchema = z.object({
  agentId: z.string().min(1).max(256),
  secret: z.string().min(1).max(4096),
});
export type StoredCredential = z.infer<typeof storedCredentialSchema>;

export class CredentialStore {
  readonly file: string;

  constructor(
    readonly stateDir: string,
    private readonly logger: Logger,
  ) {
    this.file = path.join(stateDir, CREDENTIAL_FILE);
  }

  /** The state dir holds the credential and job results: nobody but root may list or read it. */
  async start(): Promise<void> {
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
  }

  async stop(): Promise<void> {}

  /**
   * The stored credential, or null when there is none. A file that exists but does not parse is
   * an error, not "none": silently re-enrolling would hide corruption or tampering, and the token
   * may have been used up long ago.
   */
  async load(): Promise<StoredCredential | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (error) {
      if (error instanceof Error && 'code' in error && error.code === 'ENOENT') return null;
      throw error;
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new CredentialFileError(this.file, 'is not JSON');
    }
    const parsed = storedCredentialSchema.safeParse(json);
    if (!parsed.success) {
      throw new CredentialFileError(this.file, `is malformed (${parsed.error.issues[0]?.message})`);
    }
    return parsed.data;
  }

  /** Writes to a temporary sibling created 0600, fsyncs, then renames over the old file. */
  async save(credential: StoredCredential): Promise<void> {
    const value = storedCredentialSchema.parse(credential);
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    const handle = await open(tmp, 'wx', 0o600);
    try {
      // open()'s mode is narrowed by the umask but never widened; chmod makes it exact anyway.
      await handle.chmod(0o600);
      await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`, 'utf8');
      // Durable before the rename, or a crash could leave an empty credential.json behind.
      await handle.sync();
    } catch (error) {
      await handle.close().catch(() => undefined);
      await rm(tmp, { force: true });
      throw error;
    }
    await handle.close();
    // rename() swaps in the new inode whole, 0600 included, whatever mode an old file had.
    await rename(tmp, this.file);
    this.logger.info({ agentId: value.agentId, file: this.file }, 'credential stored');
  }
}

/** An operator's problem, not a bug: said in one line, without a stack, exit 1. */
export class CredentialFileError extends AgentError {
  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(
      'state-damaged',
      `credential file ${file} ${problem}; remove it and enroll again with --token`,
    );
  }
}
