#!/usr/bin/env node
// `npm start`: build whatever is missing, then run the server from the repository root.
//
// - The agent bundle (the server's local agent runs it) and, when the web app has a build script,
//   the Next.js build: if any is missing, `npx turbo run build` builds them (turbo skips what is
//   already up to date, so this is cheap when only one piece is missing).
// - The server runs with cwd = the repository root, so PGlite's default data directory
//   (`./.data`, resolved against the working directory) and the local agent's state dir
//   (`./.data/local-agent`) are at the root, whatever directory `npm start` was typed in.
// - SIGTERM and SIGINT are passed on to the server, which shuts down cleanly (the local agent
//   first); this process exits with the server's exit status, or dies of the same signal.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Build outputs the server needs at run time, each with why. */
function missingOutputs() {
  const needed = [
    {
      file: path.join(root, 'apps/agent/dist/vfio-fleet-agent.mjs'),
      what: 'the agent bundle',
    },
  ];
  const webPackage = JSON.parse(readFileSync(path.join(root, 'apps/web/package.json'), 'utf8'));
  if (typeof webPackage.scripts?.build === 'string') {
    // The same directory the server serves from (next-handler.ts's nextDistDir()).
    const distDir = process.env.VFIO_FLEET_NEXT_DIST_DIR || '.next';
    needed.push({
      file: path.join(root, 'apps/web', distDir, 'BUILD_ID'),
      what: 'the Next.js build',
    });
  }
  return needed.filter((output) => !existsSync(output.file));
}

const missing = missingOutputs();
if (missing.length > 0) {
  process.stderr.write(
    `vfio-fleet: building ${missing.map((m) => m.what).join(' and ')} (npx turbo run build)\n`,
  );
  const built = spawnSync('npx', ['turbo', 'run', 'build', '--output-logs=errors-only'], {
    cwd: root,
    stdio: 'inherit',
  });
  if (built.status !== 0) {
    process.stderr.write(`vfio-fleet: the build failed (exit ${built.status ?? built.signal})\n`);
    process.exit(built.status ?? 1);
  }
  const still = missingOutputs();
  if (still.length > 0) {
    process.stderr.write(
      `vfio-fleet: the build did not produce ${still.map((m) => path.relative(root, m.file)).join(', ')}\n`,
    );
    process.exit(1);
  }
}

// The agent's executable and .deb, which the server hands out to new hosts (/install.sh,
// /downloads/): built on the first start rather than on every `npm install`, and best-effort —
// it needs Debian's dpkg-deb and binutils, and without them the server still runs and its
// enrollment page says how to build them.
const packagingDist = process.env.VFIO_FLEET_DOWNLOADS_DIR || path.join(root, 'packaging/dist');
if (
  !existsSync(path.join(packagingDist, 'manifest.json')) &&
  !process.env.VFIO_FLEET_DOWNLOADS_DIR
) {
  process.stderr.write(
    'vfio-fleet: packaging the agent for download (npm run build -w packaging)\n',
  );
  const packaged = spawnSync(
    'npx',
    ['turbo', 'run', 'build', '--filter=@vfio-fleet/packaging', '--output-logs=errors-only'],
    { cwd: root, stdio: 'inherit' },
  );
  if (packaged.status !== 0) {
    process.stderr.write(
      'vfio-fleet: could not package the agent; the server runs without downloads (see docs/deployment.md)\n',
    );
  }
}

const server = spawn(process.execPath, ['--import', 'tsx', 'apps/web/src/main.ts'], {
  cwd: root,
  stdio: 'inherit',
  env: process.env,
});

// A terminal's Ctrl-C reaches the server too (same process group), and npm may pass the signal
// on as well: the server treats repeats as one shutdown, so forwarding each is harmless.
const forward = (signal) => {
  if (server.exitCode === null && server.signalCode === null) server.kill(signal);
};
process.on('SIGTERM', forward);
process.on('SIGINT', forward);

server.once('error', (error) => {
  process.stderr.write(`vfio-fleet: cannot start the server: ${error.message}\n`);
  process.exit(1);
});
server.once('exit', (code, signal) => {
  if (signal !== null) {
    // Die of the same signal, so whoever started us sees what happened to the server.
    process.off('SIGTERM', forward);
    process.off('SIGINT', forward);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
