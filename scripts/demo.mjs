#!/usr/bin/env node
// `npm run demo`: the server with a simulated fleet, so a newcomer sees a realistic dashboard on
// one machine. Dozens of real agents (the agent bundle's `run`) each drive the kernel model over a
// generated fixture tree (`--simulate`, rebinding allowed), with distinct hostnames and labels.
//
//   npm run demo [-- --agents N --port PORT]
//
// - The server is `scripts/start.mjs` (which builds what is missing), without its local agent, on
//   PGlite in ./.data-demo (VFIO_FLEET_DATA_DIR overrides it), or on DATABASE_URL when set.
// - The admin password is ADMIN_PASSWORD, default `demo-admin-password`; it is set on the first
//   start of an empty database only.
// - Fixture trees live in a temp dir, regenerated each run (every device back on its host
//   driver) and removed on exit. The agents' state (credentials, job results) stays in
//   <data dir>/agents with PGlite, so a second run shows the same hosts rather than new twins;
//   with DATABASE_URL it is temporary and each run enrolls new hosts.
// - Ctrl-C or SIGTERM stops the agents, then the server, then removes the trees.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const agentBin = path.join(root, 'apps/agent/bin/vfio-fleet-agent.mjs');

const USAGE = `Usage: npm run demo -- [--agents N] [--port PORT]

Starts the vfio-fleet server with N simulated agents (default 24) on generated hosts.
  --agents N    how many agents (1-200, default 24)
  --port PORT   the server's port (default $PORT or 3000; 0 picks a free one)
Env: ADMIN_PASSWORD (default demo-admin-password), DATABASE_URL, VFIO_FLEET_DATA_DIR (default ./.data-demo)
`;

function fail(message) {
  process.stderr.write(`vfio-fleet demo: ${message}\n`);
  process.exit(2);
}

let options;
try {
  options = parseArgs({
    options: {
      agents: { type: 'string' },
      port: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (error) {
  fail(`${error.message}\n${USAGE}`);
}
if (options.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const agentCount = Number(options.agents ?? '24');
if (!Number.isInteger(agentCount) || agentCount < 1 || agentCount > 200) {
  fail(`--agents must be a whole number from 1 to 200, not ${options.agents}`);
}
// Read once, here: this script is no turbo task, so turbo's env lists do not apply to it.
const settings = process.env;
const port = Number(options.port ?? settings.PORT ?? '3000');
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  fail(`--port must be a port number, not ${options.port ?? settings.PORT}`);
}
const adminPassword = settings.ADMIN_PASSWORD || 'demo-admin-password';
const usePostgres = Boolean(process.env.DATABASE_URL);
const dataDir = path.resolve(root, process.env.VFIO_FLEET_DATA_DIR || '.data-demo');

/** Scenario, hostname prefix and role of each kind of demo host, cycled through. */
const KINDS = [
  { scenario: 'dual-gpu', prefix: 'gpu', role: 'gpu' },
  { scenario: 'mlx5-vf', prefix: 'nic', role: 'nic' },
  { scenario: 'critical-nvme-nic', prefix: 'db', role: 'storage' },
  { scenario: 'vfio-bound', prefix: 'vm', role: 'gpu' },
  { scenario: 'iommu-off', prefix: 'legacy', role: 'gpu' },
];

function demoHost(index) {
  const kind = KINDS[index % KINDS.length];
  const number = String(index + 1).padStart(2, '0');
  return {
    ...kind,
    hostname: `${kind.prefix}-${number}`,
    labels: {
      rack: `r${String((index % 6) + 1).padStart(2, '0')}`,
      cluster: index % 2 === 0 ? 'a' : 'b',
      role: kind.role,
    },
  };
}

/** A stable machine id per hostname (32 hex), so reruns describe the same machines. */
function machineId(hostname) {
  let hash = 0x811c9dc5;
  let out = '';
  for (let round = 0; out.length < 32; round++) {
    for (const ch of `demo#${hostname}#${round}`) {
      hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
    }
    out += hash.toString(16).padStart(8, '0');
  }
  return out.slice(0, 32);
}

/** pci.ids for device names: the shared test data's copy when present, else the agent's default. */
function pciIdsArgs() {
  const testdata = process.env.VFIO_FLEET_TESTDATA || path.resolve(root, '../shared/testdata');
  const file = path.join(testdata, 'pci.ids');
  return existsSync(file) ? ['--pci-ids', file] : [];
}

/** A path relative to the repository when it is inside it, else absolute. */
function shortPath(file) {
  const relative = path.relative(root, file);
  return relative.startsWith('..') || path.isAbsolute(relative) ? file : `./${relative}`;
}

// --- the pieces, and stopping them --------------------------------------------------------------

let server = null;
const agents = [];
let treesDir = null;
let stopping = null;

const alive = (child) => child.exitCode === null && child.signalCode === null;
const exited = (child) =>
  alive(child) ? new Promise((resolve) => child.once('exit', resolve)) : Promise.resolve();

async function stopChild(child, graceMs) {
  if (alive(child)) child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (alive(child)) child.kill('SIGKILL');
  }, graceMs);
  await exited(child);
  clearTimeout(timer);
}

function stopAll(code) {
  stopping ??= (async () => {
    process.stdout.write('vfio-fleet demo: stopping the agents and the server\n');
    await Promise.all(agents.map((a) => stopChild(a.child, 5_000)));
    if (server !== null) await stopChild(server, 20_000);
    if (treesDir !== null) await rm(treesDir, { recursive: true, force: true });
    process.exit(code);
  })();
  return stopping;
}
// `on`, not `once`: Ctrl-C reaches every process in the terminal's group, and npm may forward it
// again; a second signal must not take the default exit and leave the trees behind.
process.on('SIGINT', () => stopAll(0));
process.on('SIGTERM', () => stopAll(0));

// --- the server ---------------------------------------------------------------------------------

function startDemoServer() {
  const env = {
    ...process.env,
    PORT: String(port),
    ADMIN_PASSWORD: adminPassword,
    VFIO_FLEET_LOCAL_AGENT: '0',
    VFIO_FLEET_LOG_LEVEL: process.env.VFIO_FLEET_LOG_LEVEL || 'info',
  };
  if (!usePostgres) env.VFIO_FLEET_DATA_DIR = dataDir;
  const child = spawn(process.execPath, [path.join(root, 'scripts/start.mjs')], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let buffer = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffer += chunk;
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let entry = null;
        try {
          entry = JSON.parse(line);
        } catch {
          process.stdout.write(`${line}\n`); // not a log line (build output): show it
          continue;
        }
        // Warnings and errors only: the info stream of dozens of agents is noise in a demo.
        if (typeof entry.level === 'number' && entry.level >= 40) {
          process.stderr.write(`server: ${entry.msg ?? line}\n`);
        }
        if (entry.msg === 'server listening' && typeof entry.url === 'string') {
          resolve({ child, port: Number(new URL(entry.url).port) });
        }
      }
    });
    child.once('exit', (code, signal) => {
      reject(new Error(`the server exited (${code ?? signal}) before it listened`));
    });
  });
}

async function trpc(baseUrl, procedure, input, cookie) {
  const res = await fetch(`${baseUrl}/api/trpc/${procedure}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(cookie ? { cookie } : {}) },
    body: JSON.stringify(input),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error(`${procedure}: ${body?.error?.message ?? `HTTP ${res.status}`}`);
  }
  return { data: body?.result?.data, setCookie: res.headers.get('set-cookie') };
}

// --- the fleet ----------------------------------------------------------------------------------

async function main() {
  // host-fixtures is TypeScript: tsx (a dev dependency at the root) loads it.
  const { register } = await import('tsx/esm/api');
  register();
  const { buildHostTree, scenario } = await import('@vfio-fleet/host-fixtures');

  const started = await startDemoServer();
  server = started.child;
  server.once('exit', (code) => {
    if (stopping === null) {
      process.stderr.write(`vfio-fleet demo: the server exited (${code}); stopping\n`);
      stopAll(1);
    }
  });
  const url = `http://127.0.0.1:${started.port}`;

  let cookie;
  try {
    const login = await trpc(url, 'auth.login', { username: 'admin', password: adminPassword });
    cookie = (login.setCookie ?? '').split(';')[0];
  } catch (error) {
    throw new Error(
      `cannot sign in as admin with ADMIN_PASSWORD (${error.message}): ${usePostgres ? 'this database' : dataDir} already has an admin with another password; set ADMIN_PASSWORD to it${usePostgres ? '' : ` or delete ${shortPath(dataDir)}`}`,
    );
  }
  const { data: enrollment } = await trpc(
    url,
    'tokens.create',
    { label: 'npm run demo', ttlHours: 1, maxUses: agentCount },
    cookie,
  );

  treesDir = await mkdtemp(path.join(tmpdir(), 'vfio-fleet-demo-'));
  const stateRoot = usePostgres ? path.join(treesDir, 'agents') : path.join(dataDir, 'agents');
  await mkdir(stateRoot, { recursive: true });
  const extra = pciIdsArgs();
  for (let i = 0; i < agentCount; i++) {
    const host = demoHost(i);
    const tree = path.join(treesDir, host.hostname);
    const spec = scenario(host.scenario);
    await buildHostTree(tree, {
      ...spec,
      hostname: host.hostname,
      machineId: machineId(host.hostname),
    });
    const child = spawn(
      process.execPath,
      [
        agentBin,
        'run',
        '--server',
        url,
        '--token',
        enrollment.token,
        '--simulate',
        tree,
        '--allow-rebind',
        '--state-dir',
        path.join(stateRoot, host.hostname),
        ...Object.entries(host.labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
        ...extra,
      ],
      { cwd: root, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      stderr = (stderr + chunk).slice(-4_000);
    });
    child.once('exit', (code, signal) => {
      if (stopping === null) {
        process.stderr.write(
          `vfio-fleet demo: agent ${host.hostname} exited (${code ?? signal}):\n${stderr}\n`,
        );
      }
    });
    agents.push({ host, child });
  }

  // The URL once the fleet is there (or after a minute, with what is there): a newcomer who opens
  // it at once should see the fleet, not an empty page filling up.
  const deadline = Date.now() + 60_000;
  let online = 0;
  while (Date.now() < deadline && stopping === null) {
    const health = await fetch(`${url}/api/health`)
      .then((res) => res.json())
      .catch(() => null);
    online = health?.hosts?.online ?? 0;
    if (online >= agentCount) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const shown = `http://localhost:${started.port}`;
  process.stdout.write(
    [
      '',
      `vfio-fleet demo: ${shown}`,
      `  sign in as admin / ${adminPassword}`,
      `  ${agentCount} simulated agents (${[...new Set(agents.map((a) => a.host.scenario))].join(', ')}), rebinding allowed; ${online} online so far`,
      `  database: ${usePostgres ? 'DATABASE_URL' : shortPath(dataDir)}`,
      '  Ctrl-C stops everything',
      '',
    ].join('\n'),
  );
}

main().catch((error) => {
  process.stderr.write(`vfio-fleet demo: ${error.message}\n`);
  stopAll(1);
});
