/**
 * `GET /install.sh`: the packaging's `install.sh.in` with this server's URL and the executable's
 * name, version and SHA-256 filled in, so `curl -fsSL <server>/install.sh | sudo sh -s -- --token …`
 * downloads the agent from the server it came from and checks it against the digest it was served
 * with. Pure.
 */
import type { ManifestFile } from './manifest';

/** The template's placeholders (the packaging's contract). */
export const INSTALL_SCRIPT_PLACEHOLDERS = {
  serverUrl: '__VFIO_FLEET_SERVER_URL__',
  version: '__VFIO_FLEET_AGENT_VERSION__',
  file: '__VFIO_FLEET_AGENT_FILE__',
  sha256: '__VFIO_FLEET_AGENT_SHA256__',
  /** The arm64 executable's name and digest; empty when the server offers none. */
  fileArm64: '__VFIO_FLEET_AGENT_FILE_ARM64__',
  sha256Arm64: '__VFIO_FLEET_AGENT_SHA256_ARM64__',
} as const;

/** Placeholders that may be filled with nothing. */
const OPTIONAL: ReadonlySet<string> = new Set(['fileArm64', 'sha256Arm64']);

/**
 * What may be pasted into the script: the template may put a placeholder inside double quotes or
 * none, so only characters no shell treats specially (a URL's host is already validated by
 * publicUrl; the manifest's names, versions and digests by its schema).
 */
const SAFE_VALUE = /^[A-Za-z0-9._~:/[\]@%+-]+$/;
const ANY_PLACEHOLDER = /__VFIO_FLEET_[A-Z0-9_]+__/;

export type RenderedScript = { ok: true; script: string } | { ok: false; error: string };

export function renderInstallScript(
  template: string,
  serverUrl: string,
  release: { version: string; executable: ManifestFile; executableArm64?: ManifestFile | null },
): RenderedScript {
  const values: Record<keyof typeof INSTALL_SCRIPT_PLACEHOLDERS, string> = {
    // The contract: no trailing slash.
    serverUrl: serverUrl.replace(/\/+$/, ''),
    version: release.version,
    file: release.executable.name,
    sha256: release.executable.sha256,
    fileArm64: release.executableArm64?.name ?? '',
    sha256Arm64: release.executableArm64?.sha256 ?? '',
  };
  let script = template;
  for (const [key, placeholder] of Object.entries(INSTALL_SCRIPT_PLACEHOLDERS)) {
    const value = values[key as keyof typeof values];
    if (!(SAFE_VALUE.test(value) || (value === '' && OPTIONAL.has(key)))) {
      return { ok: false, error: `refusing to put ${JSON.stringify(value)} into install.sh` };
    }
    script = script.replaceAll(placeholder, value);
  }
  const left = ANY_PLACEHOLDER.exec(script);
  if (left !== null) {
    return {
      ok: false,
      error: `install.sh.in has a placeholder this server does not know: ${left[0]}`,
    };
  }
  return { ok: true, script };
}
