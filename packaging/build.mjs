// Builds what a host needs to run the agent without Node.js, into dist/:
//   vfio-fleet-agent-<version>-linux-<arch>   the agent as a Node single executable application
//                                             (this machine's arch, and arm64 cross-built on x64)
//   vfio-fleet-agent_<version>_<debarch>.deb  that executable + systemd unit + default config
//   SHA256SUMS, manifest.json                 what the server serves, with checksums and sizes
//   install.sh.in                             the curl | sh template the server renders
// The server (apps/web) reads manifest.json; docs/deployment.md explains the choices.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import postject from 'postject';

const here = import.meta.dirname;
const dist = path.join(here, 'dist');
const work = path.join(dist, '.build');
const agentPackage = JSON.parse(
  readFileSync(path.join(here, '../apps/agent/package.json'), 'utf8'),
);
const version = agentPackage.version;
// The executable is a copy of the Node running this build, so it has this machine's platform.
const arch = process.arch;
const debArch = { x64: 'amd64', arm64: 'arm64' }[arch];
if (process.platform !== 'linux' || debArch === undefined) {
  throw new Error(`packaging builds Linux x64/arm64 only, not ${process.platform}-${arch}`);
}
// Node's published fuse string, which postject flips to tell node a blob is injected.
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
// gzip -6: every dpkg reads it and it takes seconds; xz -6 took 2 minutes on the 2-core CI machine
// for 10 MB less, and zstd needs dpkg 1.21.18 (Debian 12). Figures in docs/deployment.md.
const DEB_COMPRESSION = process.env.VFIO_FLEET_DEB_COMPRESSION ?? 'gzip';
// Level 6: gzip -9 (dpkg-deb's default) took 3x as long for 1% less.
const DEB_COMPRESSION_LEVEL = process.env.VFIO_FLEET_DEB_COMPRESSION_LEVEL ?? '6';

const timings = {};
function timed(name, fn) {
  const start = performance.now();
  const result = fn();
  timings[name] = Math.round(performance.now() - start);
  return result;
}
async function timedAsync(name, fn) {
  const start = performance.now();
  const result = await fn();
  timings[name] = Math.round(performance.now() - start);
  return result;
}
const hasTool = (name) =>
  (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(path.join(dir, name)));
const run = (file, args, options = {}) =>
  execFileSync(file, args, { stdio: ['ignore', 'pipe', 'inherit'], ...options });

rmSync(dist, { recursive: true, force: true });
mkdirSync(work, { recursive: true });

// 1. The agent as one CommonJS file: Node 20 runs a single executable's main script as CommonJS.
const bundle = path.join(work, 'vfio-fleet-agent.cjs');
await timedAsync('bundle', () =>
  build({
    entryPoints: [path.join(here, 'src/sea-main.ts')],
    outfile: bundle,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [
      {
        // ws tries these optional native addons in a try/catch; a single executable's require()
        // loads built-ins only and warns on every other name, so the attempt fails quietly here.
        name: 'no-optional-addons',
        setup(pluginBuild) {
          pluginBuild.onResolve({ filter: /^(bufferutil|utf-8-validate)$/ }, (args) => ({
            path: args.path,
            namespace: 'no-optional-addons',
          }));
          pluginBuild.onLoad({ filter: /.*/, namespace: 'no-optional-addons' }, (args) => ({
            contents: `throw new Error(${JSON.stringify(`${args.path} is not bundled`)});`,
            loader: 'js',
          }));
        },
      },
    ],
  }),
);

// 2. The single-executable blob (with V8's code cache: faster start, see the doc's figures).
const blob = path.join(work, 'sea-prep.blob');
const seaConfig = path.join(work, 'sea-config.json');
writeFileSync(
  seaConfig,
  JSON.stringify({
    main: bundle,
    output: blob,
    disableExperimentalSEAWarning: true,
    useCodeCache: true,
  }),
);
timed('blob', () =>
  run(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: 'pipe' }),
);

// 3. A stripped copy of this node with the blob injected. Stripping drops ~12 MB of symbols and
// debug info that nothing on a host uses (and that lintian rejects in a package).
const exeName = `vfio-fleet-agent-${version}-linux-${arch}`;
const exe = path.join(dist, exeName);
timed('strip', () => {
  if (hasTool('strip')) {
    run('strip', ['--strip-all', '--remove-section=.comment', '-o', exe, process.execPath]);
  } else {
    // Still a working executable; the lintian test fails and names binutils.
    console.warn(
      'packaging: no strip (apt-get install binutils): the executable keeps its symbols',
    );
    copyFileSync(process.execPath, exe);
  }
});
chmodSync(exe, 0o755);
await timedAsync('inject', () =>
  postject.inject(exe, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE }),
);
// Fails the build here, not on a host, if the injected executable cannot run.
run(exe, ['--help'], { stdio: ['ignore', 'ignore', 'inherit'] });

// 3b. The same agent for other architectures (arm64 on an x64 build machine): Node's official
// binary for that architecture, of exactly this Node's version, from the npm registry
// (`node-linux-<arch>`, checked by npm against the registry's sha512), with a blob made without
// V8's code cache (which is specific to the architecture that made it). VFIO_FLEET_CROSS_ARCHS
// (comma-separated; empty for none) overrides the default.
const crossArchs = (process.env.VFIO_FLEET_CROSS_ARCHS ?? (arch === 'x64' ? 'arm64' : ''))
  .split(',')
  .map((a) => a.trim())
  .filter((a) => a !== '' && a !== arch);
const crossBuilt = [];
for (const target of crossArchs) {
  try {
    crossBuilt.push(await timedAsync(`cross-${target}`, () => crossExecutable(target)));
  } catch (error) {
    // The x86-64 agent is still worth serving (npm start builds this best-effort, perhaps
    // offline); packaging's tests fail on the missing arm64 file and print this.
    console.warn(`packaging: no ${target} executable: ${error.message}`);
  }
}

// 4. The Debian package, laid out in a staging root and built by dpkg-deb.
const debName = `vfio-fleet-agent_${version}_${debArch}.deb`;
const deb = path.join(dist, debName);
const stage = path.join(work, 'deb');
const src = (...parts) => path.join(here, ...parts);
const fill = (text, values) =>
  text.replace(/@([A-Z_]+)@/g, (match, key) => {
    if (!(key in values)) throw new Error(`no value for ${match}`);
    return values[key];
  });
function put(relative, content, mode) {
  const file = path.join(stage, relative);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  if (content === null)
    linkSync(exe, file); // dpkg-deb reads it; no 88 MB copy
  else writeFileSync(file, content);
  chmodSync(file, mode);
}
timed('stage', () => {
  const docDir = 'usr/share/doc/vfio-fleet-agent';
  // Reproducible: the changelog's date is the agent package.json's last change, not now.
  const date = new Date(statSync(path.join(here, '../apps/agent/package.json')).mtimeMs);
  const gz = (text) => gzipSync(Buffer.from(text), { level: 9 }); // zlib writes no name or time
  put('usr/bin/vfio-fleet-agent', null, 0o755);
  put(
    'lib/systemd/system/vfio-fleet-agent.service',
    readFileSync(src('systemd/vfio-fleet-agent.service')),
    0o644,
  );
  put('etc/vfio-fleet/agent.env', readFileSync(src('debian/agent.env')), 0o600);
  put(`${docDir}/copyright`, readFileSync(src('debian/copyright')), 0o644);
  put(
    `${docDir}/changelog.gz`,
    gz(
      fill(readFileSync(src('debian/changelog.in'), 'utf8'), {
        VERSION: version,
        DATE: date.toUTCString().replace('GMT', '+0000'),
      }),
    ),
    0o644,
  );
  put(
    'usr/share/man/man1/vfio-fleet-agent.1.gz',
    gz(fill(readFileSync(src('debian/vfio-fleet-agent.1.in'), 'utf8'), { VERSION: version })),
    0o644,
  );
  put(
    'usr/share/lintian/overrides/vfio-fleet-agent',
    readFileSync(src('debian/lintian-overrides')),
    0o644,
  );
  for (const script of ['postinst', 'prerm', 'postrm']) {
    put(`DEBIAN/${script}`, readFileSync(src('debian', script)), 0o755);
  }
  put('DEBIAN/conffiles', readFileSync(src('debian/conffiles')), 0o644);
  put('DEBIAN/md5sums', md5sums(['usr', 'lib']), 0o644); // conffiles are not listed
  const installedKb = run('du', ['-sk', '--exclude=DEBIAN', stage], { encoding: 'utf8' }).split(
    '\t',
  )[0];
  put(
    'DEBIAN/control',
    fill(readFileSync(src('debian/control.in'), 'utf8'), {
      VERSION: version,
      ARCH: debArch,
      INSTALLED_SIZE: installedKb,
      DEPENDS: shlibDepends(path.join(stage, 'usr/bin/vfio-fleet-agent')),
    }),
    0o644,
  );
});
timed('dpkg-deb', () =>
  run('dpkg-deb', [
    '--root-owner-group',
    `-Z${DEB_COMPRESSION}`,
    `-z${DEB_COMPRESSION_LEVEL}`,
    '--build',
    stage,
    deb,
  ]),
);

// 5. Checksums, the manifest the server reads, and the install script template.
const files = [
  { name: exeName, kind: 'executable', arch },
  { name: debName, kind: 'deb', arch },
  ...crossBuilt.map((built) => ({ name: built.name, kind: 'executable', arch: built.arch })),
].map(({ name, kind, arch: fileArch }) => {
  const data = readFileSync(path.join(dist, name));
  return {
    name,
    kind,
    os: 'linux',
    arch: fileArch,
    sha256: createHash('sha256').update(data).digest('hex'),
    size: data.length,
  };
});
writeFileSync(
  path.join(dist, 'SHA256SUMS'),
  files.map((file) => `${file.sha256}  ${file.name}\n`).join(''),
);
writeFileSync(path.join(dist, 'manifest.json'), `${JSON.stringify({ version, files }, null, 2)}\n`);
writeFileSync(path.join(dist, 'install.sh.in'), installTemplate(), { mode: 0o644 });
rmSync(work, { recursive: true, force: true });

console.log(
  `packaging: ${files.map((f) => `${f.name} (${(f.size / 1e6).toFixed(1)} MB)`).join(', ')}; ms ${JSON.stringify(timings)}`,
);

/**
 * The agent's single executable for `target` (not this machine's architecture): that Node binary
 * from the npm registry (cached under ~/.cache/vfio-fleet), stripped when a cross strip is
 * installed, with a code-cache-free blob injected, and started once under qemu-user when it is
 * installed. Returns its file name in dist/.
 */
async function crossExecutable(target) {
  // ELF e_machine of each architecture: a downloaded binary must be that one.
  const machine = { x64: 62, arm64: 183 }[target];
  if (machine === undefined) throw new Error(`packaging: no cross build for ${target}`);
  const nodeVersion = process.versions.node;
  const pkg = `node-linux-${target}@${nodeVersion}`;
  const cache = path.join(
    process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'),
    'vfio-fleet',
    `node-linux-${target}-${nodeVersion}`,
  );
  const node = path.join(cache, 'node');
  if (!existsSync(node)) {
    mkdirSync(cache, { recursive: true });
    try {
      const tgz = run('npm', ['pack', pkg, '--silent', '--pack-destination', cache], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      })
        .trim()
        .split('\n')
        .at(-1);
      run('tar', [
        '-xzf',
        path.join(cache, tgz),
        '-C',
        cache,
        '--strip-components=2',
        'package/bin/node',
      ]);
      rmSync(path.join(cache, tgz), { force: true });
    } catch (error) {
      throw new Error(
        `packaging: cannot fetch ${pkg} from the npm registry for the ${target} executable ` +
          `(set VFIO_FLEET_CROSS_ARCHS= to build ${arch} only): ${error.message}`,
      );
    }
  }
  const header = readFileSync(node).subarray(0, 20);
  if (header.readUInt32BE(0) !== 0x7f454c46 || header.readUInt16LE(18) !== machine) {
    throw new Error(`packaging: ${node} is not a Linux ${target} ELF executable`);
  }
  const crossBlob = path.join(work, `sea-prep-${target}.blob`);
  const crossConfig = path.join(work, `sea-config-${target}.json`);
  writeFileSync(
    crossConfig,
    JSON.stringify({
      main: bundle,
      output: crossBlob,
      disableExperimentalSEAWarning: true,
      useCodeCache: false,
    }),
  );
  run(process.execPath, ['--experimental-sea-config', crossConfig], { stdio: 'pipe' });
  const name = `vfio-fleet-agent-${version}-linux-${target}`;
  const out = path.join(dist, name);
  const prefix = { arm64: 'aarch64-linux-gnu' }[target];
  if (prefix !== undefined && hasTool(`${prefix}-strip`)) {
    run(`${prefix}-strip`, ['--strip-all', '--remove-section=.comment', '-o', out, node]);
  } else {
    console.warn(
      `packaging: no ${prefix}-strip (apt-get install binutils-${prefix}): ${name} keeps its symbols`,
    );
    copyFileSync(node, out);
  }
  chmodSync(out, 0o755);
  await postject.inject(out, 'NODE_SEA_BLOB', readFileSync(crossBlob), { sentinelFuse: SEA_FUSE });
  const qemu = { arm64: 'qemu-aarch64' }[target];
  const sysroot = prefix === undefined ? null : `/usr/${prefix}`;
  if (qemu !== undefined && hasTool(qemu) && sysroot !== null && existsSync(sysroot)) {
    run(qemu, ['-L', sysroot, out, '--help'], { stdio: ['ignore', 'ignore', 'inherit'] });
  } else {
    console.warn(`packaging: ${name} not started (no ${qemu} with ${sysroot})`);
  }
  return { name, arch: target };
}

/**
 * The Depends line for the executable's shared libraries, from dpkg-shlibdeps (which needs a
 * debian/control to run in; a throwaway one is enough).
 */
function shlibDepends(binary) {
  if (!hasTool('dpkg-shlibdeps') || !hasTool('objdump')) {
    // What Node 20's official x64 build links against, as dpkg-shlibdeps computed it.
    console.warn('packaging: no dpkg-shlibdeps/objdump (apt-get install dpkg-dev binutils)');
    return 'libc6 (>= 2.28), libgcc-s1 (>= 3.4), libstdc++6 (>= 5.2)';
  }
  const dir = path.join(work, 'shlibdeps');
  mkdirSync(path.join(dir, 'debian'), { recursive: true });
  writeFileSync(
    path.join(dir, 'debian/control'),
    'Source: vfio-fleet-agent\n\nPackage: vfio-fleet-agent\nArchitecture: any\n',
  );
  // stderr: its warnings about libraries node links but does not need are not ours to fix.
  const out = run('dpkg-shlibdeps', ['-O', binary], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const match = /^shlibs:Depends=(.*)$/m.exec(out);
  if (match === null) throw new Error(`dpkg-shlibdeps printed no Depends: ${out}`);
  // Debian 12's libc6 symbols file asks for 2.34 because node links libpthread.so.0, whose
  // symbols moved into libc in 2.34; the binary itself needs only the newest GLIBC_ version it
  // references (2.28 for Node 20's official build), which keeps Debian 11 and Ubuntu 20.04 in.
  const symbols = run('objdump', ['-T', binary], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const glibc = [...symbols.matchAll(/\bGLIBC_(\d+)\.(\d+)\b/g)]
    .map((m) => [Number(m[1]), Number(m[2])])
    .sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .at(-1);
  if (glibc === undefined) return match[1];
  return match[1].replace(/\blibc6 \(>= [^)]*\)/, `libc6 (>= ${glibc[0]}.${glibc[1]})`);
}

/**
 * The install script template with the unit embedded (one download for `curl | sh`), its
 * ExecStart on the script's install path. The server fills in the __VFIO_FLEET_*__ values.
 */
function installTemplate() {
  const unit = readFileSync(src('systemd/vfio-fleet-agent.service'), 'utf8').trimEnd();
  const localUnit = unit.replace(
    /^ExecStart=\/usr\/bin\/vfio-fleet-agent /m,
    'ExecStart=/usr/local/bin/vfio-fleet-agent ',
  );
  if (localUnit === unit) throw new Error('the unit has no ExecStart=/usr/bin/vfio-fleet-agent');
  const template = readFileSync(src('install/install.sh.in'), 'utf8');
  if (!template.includes('@VFIO_FLEET_AGENT_UNIT@\n')) throw new Error('no unit marker');
  return template.replace('@VFIO_FLEET_AGENT_UNIT@\n', () => `${localUnit}\n`);
}

/** DEBIAN/md5sums (what debsums checks) for every file under the given top directories. */
function md5sums(tops) {
  const lines = [];
  const walk = (relative) => {
    const full = path.join(stage, relative);
    if (statSync(full).isDirectory()) {
      for (const entry of readdirSync(full).sort()) walk(path.join(relative, entry));
    } else {
      lines.push(`${createHash('md5').update(readFileSync(full)).digest('hex')}  ${relative}\n`);
    }
  };
  for (const top of tops) walk(top);
  return lines.join('');
}
