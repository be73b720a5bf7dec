// Lock files against real processes (a child that holds, then is killed with SIGKILL) and private
// modes on a real tree.
import { type ChildProcess, spawn } from 'node:child_process';
import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DirectoryLockedError,
  identityOf,
  type LockOwner,
  lockDirectory,
  makePrivate,
  processStartTime,
  readLock,
  tryLock,
} from '../src/index';

let tmp: string;
let n = 0;
const fresh = () => path.join(tmp, `case-${++n}`);

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'local-state-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function sleeper(): { child: ChildProcess; pid: number; exited: Promise<unknown> } {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  if (child.pid === undefined) throw new Error('no child');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return { child, pid: child.pid, exited };
}

async function writeOwner(file: string, owner: Partial<LockOwner> & { pid: number }) {
  await mkdir(path.dirname(file), { recursive: true });
  const full: LockOwner = {
    ...identityOf(owner.pid),
    acquiredAt: '2025-01-01T00:00:00.000Z',
    info: {},
    ...owner,
  };
  await writeFile(file, `${JSON.stringify(full)}\n`);
}

describe('tryLock', () => {
  it('gives the lock once, names the holder after, and is free again after release', async () => {
    const file = path.join(fresh(), 'a.lock');
    const first = await tryLock(file, { info: { role: 'test' } });
    expect(first.kind).toBe('acquired');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const second = await tryLock(file);
    expect(second).toMatchObject({ kind: 'held', liveness: 'alive', owner: { pid: process.pid } });
    expect((await readLock(file))?.owner?.info).toEqual({ role: 'test' });
    if (first.kind === 'acquired') await first.lock.release();
    expect(await readLock(file)).toBeNull();
    const third = await tryLock(file);
    expect(third.kind).toBe('acquired');
    if (third.kind === 'acquired') await third.lock.release();
  });

  it('is held while its owner runs and taken over once it is killed with SIGKILL', async () => {
    const file = path.join(fresh(), 'b.lock');
    const holder = sleeper();
    try {
      await writeOwner(file, { pid: holder.pid });
      expect(await tryLock(file)).toMatchObject({ kind: 'held', liveness: 'alive' });
      holder.child.kill('SIGKILL');
      await holder.exited;
      const attempt = await tryLock(file);
      expect(attempt.kind).toBe('acquired');
      if (attempt.kind === 'acquired') {
        expect(JSON.parse(await readFile(file, 'utf8')).pid).toBe(process.pid);
        await attempt.lock.release();
      }
    } finally {
      holder.child.kill('SIGKILL');
    }
  });

  it('does not take a reused pid for its old owner (start time), nor a lock from before a reboot', async () => {
    const ownStart = processStartTime(process.pid);
    const reused = path.join(fresh(), 'c.lock');
    // Linux only: elsewhere there is no start time to tell them apart.
    if (ownStart !== null) {
      await writeOwner(reused, { pid: process.pid, startTime: `${Number(ownStart) + 1}` });
      expect((await tryLock(reused)).kind).toBe('acquired');
    }
    const rebooted = path.join(fresh(), 'd.lock');
    await writeOwner(rebooted, { pid: process.pid, bootId: 'another-boot' });
    expect((await tryLock(rebooted)).kind).toBe(identityOf().bootId === null ? 'held' : 'acquired');
  });

  it('leaves alone a lock from another host, and a file being written; takes an old empty one', async () => {
    const foreign = path.join(fresh(), 'e.lock');
    await writeOwner(foreign, { pid: 1, hostname: `not-${hostname()}`, bootId: 'another-boot' });
    expect(await tryLock(foreign)).toMatchObject({ kind: 'held', liveness: 'unknown' });
    // The same file on a disk known to be local: another hostname and boot is this host rebooted.
    expect((await tryLock(foreign, { local: true })).kind).toBe('acquired');

    const empty = path.join(fresh(), 'f.lock');
    await mkdir(path.dirname(empty), { recursive: true });
    await writeFile(empty, '');
    expect(await tryLock(empty)).toMatchObject({ kind: 'held', owner: null });
    const old = new Date(Date.now() - 60_000);
    await utimes(empty, old, old);
    expect((await tryLock(empty)).kind).toBe('acquired');
  });

  it('reads a bare pid line, and treats this process as stale only when asked to', async () => {
    const file = path.join(fresh(), 'g.lock');
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, `${process.pid}\n`);
    expect(await tryLock(file)).toMatchObject({ kind: 'held', owner: { pid: process.pid } });
    expect((await tryLock(file, { ownProcessIsStale: true })).kind).toBe('acquired');
  });
});

describe('lockDirectory', () => {
  it('refuses a second owner with a message naming the directory and the pid', async () => {
    const dir = fresh();
    const holder = sleeper();
    try {
      await writeOwner(path.join(dir, 'server.lock'), { pid: holder.pid });
      const error = await lockDirectory(dir, {
        name: 'server.lock',
        purpose: 'the test database',
        hint: 'stop it first',
      }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DirectoryLockedError);
      expect((error as Error).message).toBe(
        `the test database in ${dir} is in use by pid ${holder.pid}, since 2025-01-01T00:00:00.000Z: stop it first`,
      );
    } finally {
      holder.child.kill('SIGKILL');
    }
  });
});

describe('makePrivate', () => {
  it('strips group and other bits below a directory, without following links', async () => {
    const dir = fresh();
    const outside = path.join(tmp, 'outside.txt');
    await mkdir(path.join(dir, 'base/1'), { recursive: true });
    await writeFile(path.join(dir, 'base/1/16384'), 'x');
    await writeFile(path.join(dir, 'PG_VERSION'), '17');
    await writeFile(outside, 'not ours');
    await chmod(outside, 0o644);
    await symlink(outside, path.join(dir, 'link'));
    for (const d of [dir, path.join(dir, 'base'), path.join(dir, 'base/1')]) await chmod(d, 0o755);
    for (const f of ['base/1/16384', 'PG_VERSION']) await chmod(path.join(dir, f), 0o666);

    expect(await makePrivate(dir)).toBe(5);
    for (const d of [dir, path.join(dir, 'base'), path.join(dir, 'base/1')]) {
      expect((await stat(d)).mode & 0o777, d).toBe(0o700);
    }
    for (const f of ['base/1/16384', 'PG_VERSION']) {
      expect((await stat(path.join(dir, f))).mode & 0o777, f).toBe(0o600);
    }
    expect((await stat(outside)).mode & 0o777).toBe(0o644);
    expect(await makePrivate(dir)).toBe(0);
  });

  it('creates a missing directory 0700', async () => {
    const dir = path.join(fresh(), 'new');
    expect(await makePrivate(dir)).toBe(0);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });
});
