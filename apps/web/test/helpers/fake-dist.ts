// A packaging/dist as `npm run build -w packaging` writes it (the contract with the packaging): a
// manifest.json naming an "executable" and a .deb by SHA-256 and size, the files (small random
// bytes here), and an install.sh.in whose placeholders the server fills. The template here is a
// stand-in that does what the real one must: download the executable from the server it names and
// refuse it unless its SHA-256 matches.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { AgentManifest } from '../../src/downloads/manifest';

export const FAKE_EXECUTABLE = 'vfio-fleet-agent-0.1.0-linux-x64';
export const FAKE_DEB = 'vfio-fleet-agent_0.1.0_amd64.deb';

export const FAKE_INSTALL_TEMPLATE = `#!/bin/sh
set -eu
SERVER="__VFIO_FLEET_SERVER_URL__"
VERSION="__VFIO_FLEET_AGENT_VERSION__"
FILE="__VFIO_FLEET_AGENT_FILE__"
SHA256="__VFIO_FLEET_AGENT_SHA256__"
DEST="\${DESTDIR:?}"
curl -fsSL -o "$DEST/$FILE" "$SERVER/downloads/$FILE"
echo "$SHA256  $DEST/$FILE" | sha256sum -c - >/dev/null
echo "installed $VERSION from $SERVER with $*"
`;

export function sha256(bytes: Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export interface FakeDist {
  dir: string;
  manifest: AgentManifest;
  files: Record<string, Buffer>;
}

export async function writeFakeDist(dir: string, version = '0.1.0'): Promise<FakeDist> {
  await mkdir(dir, { recursive: true });
  const files: Record<string, Buffer> = {
    // Larger than one stream chunk (64 KiB), so streaming is exercised.
    [FAKE_EXECUTABLE]: randomBytes(200_000),
    [FAKE_DEB]: randomBytes(50_000),
  };
  const manifest: AgentManifest = {
    version,
    files: [
      { name: FAKE_EXECUTABLE, kind: 'executable', os: 'linux', arch: 'x64' },
      { name: FAKE_DEB, kind: 'deb', os: 'linux', arch: 'amd64' },
    ].map((f) => {
      const bytes = files[f.name] ?? Buffer.alloc(0);
      return { ...f, sha256: sha256(bytes), size: bytes.length };
    }),
  };
  for (const [name, bytes] of Object.entries(files)) await writeFile(path.join(dir, name), bytes);
  await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  await writeFile(path.join(dir, 'install.sh.in'), FAKE_INSTALL_TEMPLATE);
  return { dir, manifest, files };
}
