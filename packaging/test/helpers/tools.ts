// Debian's tools, run as child processes; a missing tool fails the test with what to install.
import { spawnSync } from 'node:child_process';
import { cp, mkdir } from 'node:fs/promises';
import path from 'node:path';

export function tool(file: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env) {
  const run = spawnSync(file, args, {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
    timeout: 120_000,
    env,
  });
  if (run.error !== undefined) {
    throw new Error(
      `cannot run ${file} (apt-get install -y lintian systemd dpkg-dev): ${run.error.message}`,
    );
  }
  return run;
}

/**
 * `systemd-analyze verify` on a unit installed under `root`. Its --root mode needs the targets
 * the unit names (multi-user.target, network-online.target): this machine's own units are copied
 * into root's /usr/lib/systemd/system. Unknown keys or bad values are only warnings (exit 0),
 * so a clean verify is exit 0 with nothing on stderr.
 */
export async function verifyUnit(root: string, unit: string) {
  const systemUnits = path.join(root, 'usr/lib/systemd/system');
  await mkdir(systemUnits, { recursive: true });
  await cp('/usr/lib/systemd/system', systemUnits, {
    recursive: true,
    force: false,
    errorOnExist: false,
    verbatimSymlinks: true,
  });
  return tool('systemd-analyze', ['verify', `--root=${root}`, '--man=no', unit]);
}
