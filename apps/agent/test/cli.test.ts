// The CLI as operators and scripts use it: a real child process, exit codes, stdout vs stderr.
import { readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { readModulesAlias } from '@vfio-fleet/testdata';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runAgent } from './helpers/run-agent';

const MLX5_VF = 'pci:v000015B3d0000101Esv000015B3sd00000083bc02sc00i00';
const GPU = 'pci:v000010DEd00001B80sv00001458sd00003702bc03sc00i00';
let tmp: string;
let aliasFile: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'agent-cli-'));
  aliasFile = path.join(tmp, 'modules.alias');
  await writeFile(aliasFile, readModulesAlias('6.12.117+deb12-amd64+vfio-variants'));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('vfio-fleet-agent (usage)', () => {
  it('prints its version, the one its package.json and the server hold, with --version', async () => {
    const { version } = JSON.parse(
      await readFile(path.join(import.meta.dirname, '..', 'package.json'), 'utf8'),
    ) as { version: string };
    for (const flag of ['--version', '-V']) {
      const run = runAgent([flag]);
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toBe(`vfio-fleet-agent ${version}\n`);
    }
  });

  it('rejects an unknown command with usage and exit 2', () => {
    const run = runAgent(['frobnicate']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('unknown command "frobnicate"');
    expect(run.stderr).toContain('Usage: vfio-fleet-agent COMMAND');
    expect(run.stdout).toBe('');
  });

  it('rejects an unknown flag with the command usage and exit 2', () => {
    const run = runAgent(['scan', '--frob']);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/scan: .*--frob/);
    expect(run.stderr).toContain('Usage: vfio-fleet-agent scan');
  });

  it.each(['scan', 'match', 'plan', 'capture'])('prints help for %s', (command) => {
    const run = runAgent([command, '--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain(`Usage: vfio-fleet-agent ${command}`);
  });
});

describe('vfio-fleet-agent scan (this machine)', () => {
  const addresses = readdirSync('/sys/bus/pci/devices');

  it('exits 0 and mentions every PCI address of this machine', () => {
    const run = runAgent(['scan']);
    expect(run.status, run.stderr).toBe(0);
    expect(addresses.length).toBeGreaterThan(0);
    for (const address of addresses) expect(run.stdout).toContain(address);
    expect(run.stdout).toContain('Host');
    expect(run.stdout).not.toContain('\u001b['); // not a TTY: no color
  });

  it('prints the snapshot as JSON with --json', () => {
    const run = runAgent(['scan', '--json']);
    expect(run.status, run.stderr).toBe(0);
    const snapshot = JSON.parse(run.stdout);
    expect(snapshot.schemaVersion).toBe(1);
    expect(snapshot.devices.map((d: { address: string }) => d.address).sort()).toEqual(
      [...addresses].sort(),
    );
  });
});

describe('vfio-fleet-agent match', () => {
  it('answers good modaliases in order and names the malformed one, exit 2', () => {
    const run = runAgent(['match', '--modules-alias', aliasFile, MLX5_VF, 'pci:garbage', GPU]);
    expect(run.status).toBe(2);
    expect(run.stdout).toBe(`${MLX5_VF}\tmlx5_vfio_pci\n${GPU}\tvfio_pci\n`);
    expect(run.stderr).toContain('pci:garbage');
  });

  it('explains the selection with --json', () => {
    const run = runAgent(['match', '--json', '--modules-alias', aliasFile, MLX5_VF]);
    expect(run.status, run.stderr).toBe(0);
    const [answer] = JSON.parse(run.stdout);
    expect(answer.modalias).toBe(MLX5_VF);
    expect(answer.selection).toMatchObject({ module: 'mlx5_vfio_pci', source: 'alias' });
    expect(answer.selection.explanation).toContain('mlx5_vfio_pci');
  });

  it('falls back to vfio_pci with a note when the host has no modules.alias', () => {
    const run = runAgent(['match', MLX5_VF], {});
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toBe(`${MLX5_VF}\tvfio_pci\n`);
    expect(run.stderr).toContain('modules.alias not found');
  });
});

describe('vfio-fleet-agent plan (this machine)', () => {
  it('refuses with reasons on stderr and exit 3 when the IOMMU is off', () => {
    const [address] = readdirSync('/sys/bus/pci/devices').sort().slice(-1);
    const run = runAgent(['plan', address ?? '', '--to', 'vfio']);
    expect(run.status, run.stderr).toBe(3);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('plan refused');
    expect(run.stderr).toContain('iommu-off');
  });

  it('rejects a garbage address with exit 2', () => {
    const run = runAgent(['plan', 'not-an-address', '--to', 'vfio']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('not-an-address');
  });

  it('rejects an address that is not on the host with exit 2', () => {
    const run = runAgent(['plan', '0000:ee:1f.7', '--to', 'vfio']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('no PCI device 0000:ee:1f.7');
  });

  it('requires --to vfio|host', () => {
    const run = runAgent(['plan', '0000:00:01.0', '--to', 'elsewhere']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--to must be vfio or host');
  });
});

describe('vfio-fleet-agent capture (this machine)', () => {
  it('captures a tree that scans to the same snapshot', () => {
    const out = path.join(tmp, 'capture-self');
    const capture = runAgent(['capture', '--out', out]);
    expect(capture.status, capture.stderr).toBe(0);
    const live = JSON.parse(runAgent(['scan', '--json']).stdout);
    const copy = JSON.parse(runAgent(['scan', '--json', '--root', out]).stdout);
    expect({ ...copy, collectedAt: null }).toEqual({ ...live, collectedAt: null });
  });

  it('refuses to write into a non-empty directory', () => {
    const run = runAgent(['capture', '--out', path.dirname(aliasFile)]);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('not an empty directory');
  });
});
