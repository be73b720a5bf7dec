// What build.mjs wrote, read through its manifest (the same file the server reads).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export const packagingDir = path.resolve(import.meta.dirname, '../..');
export const repoRoot = path.resolve(packagingDir, '..');
export const distDir = path.join(packagingDir, 'dist');

const manifestSchema = z.object({
  version: z.string().min(1),
  files: z.array(
    z.object({
      name: z.string().min(1),
      kind: z.enum(['executable', 'deb']),
      os: z.literal('linux'),
      arch: z.enum(['x64', 'arm64']),
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
      size: z.number().int().positive(),
    }),
  ),
});
export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestFile = Manifest['files'][number];

export function readManifest(): Manifest {
  return manifestSchema.parse(
    JSON.parse(readFileSync(path.join(distDir, 'manifest.json'), 'utf8')),
  );
}

export function distFile(
  kind: ManifestFile['kind'],
  arch: ManifestFile['arch'] = 'x64',
): ManifestFile & { path: string } {
  const file = readManifest().files.find(
    (candidate) => candidate.kind === kind && candidate.arch === arch,
  );
  if (file === undefined) {
    throw new Error(
      `manifest.json lists no ${arch} ${kind} (build.mjs printed why: for arm64, the npm registry or the aarch64 tools)`,
    );
  }
  return { ...file, path: path.join(distDir, file.name) };
}

/** The agent's own version, which every artifact must carry. */
export function agentVersion(): string {
  const pkg = z
    .object({ version: z.string() })
    .parse(JSON.parse(readFileSync(path.join(repoRoot, 'apps/agent/package.json'), 'utf8')));
  return pkg.version;
}
