/**
 * The agent's packaging manifest (`packaging/dist/manifest.json`, written by
 * `npm run build -w packaging`): the version and every file the server may hand out, each with its
 * SHA-256 and size. Only names listed here are ever served, so the schema is the allow-list: a name
 * is one plain path segment (no `/`, no `..`, no `%`), and a manifest that is not exactly this
 * shape serves nothing. Pure: parsing, lookups, and the SHA256SUMS text.
 */
import { z } from 'zod';

/** One path segment: starts with a letter or digit, so never `.`/`..`, and holds no `/` or `%`. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,199}$/;
const WORD = /^[a-z0-9_-]{1,32}$/;

/** Names the server answers itself under /downloads/: a file of the same name would be shadowed. */
export const RESERVED_NAMES: readonly string[] = ['manifest.json', 'SHA256SUMS', 'install.sh.in'];

export const manifestFileSchema = z.object({
  name: z.string().regex(FILE_NAME, 'a plain file name (letters, digits, . _ + ~ -)'),
  /** `executable` (the self-contained agent), `deb`; others are served as plain bytes. */
  kind: z.string().regex(WORD),
  os: z.string().regex(WORD).optional(),
  arch: z.string().regex(WORD).optional(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits'),
  size: z.number().int().nonnegative(),
});
export type ManifestFile = z.infer<typeof manifestFileSchema>;

export const agentManifestSchema = z
  .object({
    version: z.string().regex(/^[0-9A-Za-z][0-9A-Za-z.+~-]{0,63}$/, 'a version like 0.1.0'),
    files: z.array(manifestFileSchema).max(200),
  })
  .superRefine((manifest, ctx) => {
    const seen = new Set<string>();
    for (const [i, file] of manifest.files.entries()) {
      if (seen.has(file.name) || RESERVED_NAMES.includes(file.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['files', i, 'name'],
          message: `${file.name} is listed twice or is reserved`,
        });
      }
      seen.add(file.name);
    }
  });
export type AgentManifest = z.infer<typeof agentManifestSchema>;

export type ManifestParse = { ok: true; manifest: AgentManifest } | { ok: false; error: string };

export function parseManifest(text: string): ManifestParse {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, error: `manifest.json is not JSON: ${(error as Error).message}` };
  }
  const parsed = agentManifestSchema.safeParse(json);
  if (!parsed.success) {
    return { ok: false, error: `manifest.json is invalid: ${z.prettifyError(parsed.error)}` };
  }
  return { ok: true, manifest: parsed.data };
}

/** The names the same architecture goes by in Node (`x64`) and in Debian (`amd64`). */
const ARCH_ALIASES: Record<string, readonly string[]> = {
  x64: ['x64', 'amd64', 'x86_64'],
  arm64: ['arm64', 'aarch64'],
};

function isArch(file: ManifestFile, arch: string): boolean {
  return file.arch === undefined || (ARCH_ALIASES[arch] ?? [arch]).includes(file.arch);
}

/** What the install commands need: the release, and its executable and .deb for one platform. */
export interface AgentRelease {
  version: string;
  executable: ManifestFile | null;
  deb: ManifestFile | null;
}

export function agentRelease(manifest: AgentManifest, arch = 'x64'): AgentRelease {
  const pick = (kind: string) =>
    manifest.files.find(
      (f) => f.kind === kind && (f.os === undefined || f.os === 'linux') && isArch(f, arch),
    ) ?? null;
  return { version: manifest.version, executable: pick('executable'), deb: pick('deb') };
}

export function findFile(manifest: AgentManifest, name: string): ManifestFile | null {
  return manifest.files.find((f) => f.name === name) ?? null;
}

/** `sha256sum -c` input for every listed file, in the manifest's order. */
export function sha256sums(manifest: AgentManifest): string {
  return manifest.files.map((f) => `${f.sha256}  ${f.name}\n`).join('');
}

export function contentTypeOf(file: ManifestFile): string {
  return file.kind === 'deb' ? 'application/vnd.debian.binary-package' : 'application/octet-stream';
}
