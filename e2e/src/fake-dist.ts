/**
 * The packaged agent the e2e server hands out: a stand-in for `npm run build -w packaging`'s
 * packaging/dist (manifest.json, the files it lists with their SHA-256 and size, install.sh.in), so
 * the enrollment page shows every install command whether or not the real packaging was built.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const E2E_AGENT_VERSION = '0.1.0';

export async function writeFakeDist(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  const files = [
    { name: `vfio-fleet-agent-${E2E_AGENT_VERSION}-linux-x64`, kind: 'executable', arch: 'x64' },
    { name: `vfio-fleet-agent_${E2E_AGENT_VERSION}_amd64.deb`, kind: 'deb', arch: 'amd64' },
  ];
  const listed = [];
  for (const file of files) {
    const bytes = Buffer.from(`e2e stand-in for ${file.name}\n`);
    await writeFile(path.join(dir, file.name), bytes);
    listed.push({
      ...file,
      os: 'linux',
      sha256: createHash('sha256').update(bytes).digest('hex'),
      size: bytes.length,
    });
  }
  await writeFile(
    path.join(dir, 'manifest.json'),
    JSON.stringify({ version: E2E_AGENT_VERSION, files: listed }, null, 2),
  );
  await writeFile(
    path.join(dir, 'install.sh.in'),
    '#!/bin/sh\n# e2e stand-in\nSERVER="__VFIO_FLEET_SERVER_URL__"\nFILE="__VFIO_FLEET_AGENT_FILE__"\nSHA256="__VFIO_FLEET_AGENT_SHA256__"\nVERSION="__VFIO_FLEET_AGENT_VERSION__"\n',
  );
}
