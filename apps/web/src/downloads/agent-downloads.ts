/**
 * The directory the server hands the agent out of (VFIO_FLEET_DOWNLOADS_DIR, by default this
 * checkout's `packaging/dist`): its manifest.json, read again only when its mtime, size or inode
 * changed (a rebuild replaces it while the server runs), the files it lists, and install.sh.in.
 * A missing or invalid manifest is a state the server reports ("not packaged"), not an error: the
 * fleet runs without downloads.
 */
import type { Stats } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { CURRENT_AGENT_VERSION } from '../fleet/agent-version';
import type { Logger } from '../logger';
import { type AgentManifest, type AgentRelease, agentRelease, parseManifest } from './manifest';

/** <repo>/packaging/dist, found from this file as next-handler.ts finds apps/web. */
export const DEFAULT_DOWNLOADS_DIR = path.resolve(
  import.meta.dirname,
  '../../../../packaging/dist',
);

export const MANIFEST_FILE = 'manifest.json';
export const INSTALL_TEMPLATE_FILE = 'install.sh.in';

/** What a host is told when there is nothing to download (it is an operator who reads it). */
export const NOT_PACKAGED_MESSAGE =
  'The vfio-fleet agent has not been packaged on this server.\n' +
  'Build it in the server checkout with `npm run build -w packaging`, or set ' +
  'VFIO_FLEET_DOWNLOADS_DIR to a directory holding manifest.json and the files it lists.\n';

export type ManifestState =
  | { ok: true; manifest: AgentManifest; release: AgentRelease }
  | { ok: false; reason: 'not-packaged' | 'invalid'; message: string };

interface Cached {
  key: string;
  state: ManifestState;
}

function statKey(s: Stats): string {
  return `${s.ino}:${s.size}:${s.mtimeMs}`;
}

export class AgentDownloads {
  private cached: Cached | null = null;

  constructor(
    readonly dir: string,
    private readonly logger: Logger,
  ) {}

  async manifest(): Promise<ManifestState> {
    const file = path.join(this.dir, MANIFEST_FILE);
    let info: Stats;
    try {
      info = await stat(file);
    } catch {
      this.cached = null;
      return { ok: false, reason: 'not-packaged', message: NOT_PACKAGED_MESSAGE };
    }
    const key = statKey(info);
    if (this.cached?.key === key) return this.cached.state;
    let state: ManifestState;
    try {
      const parsed = parseManifest(await readFile(file, 'utf8'));
      if (parsed.ok) {
        state = { ok: true, manifest: parsed.manifest, release: agentRelease(parsed.manifest) };
        this.logger.info(
          { dir: this.dir, version: parsed.manifest.version },
          'agent manifest read',
        );
        if (parsed.manifest.version !== CURRENT_AGENT_VERSION) {
          // Hosts installed from here would report a version the dashboard calls outdated (or newer).
          this.logger.warn(
            { packaged: parsed.manifest.version, current: CURRENT_AGENT_VERSION },
            'the packaged agent is not the version this server ships: rebuild the packaging',
          );
        }
      } else {
        this.logger.warn({ file, error: parsed.error }, 'the agent manifest is invalid');
        state = {
          ok: false,
          reason: 'invalid',
          message: `${parsed.error}\nRebuild it with \`npm run build -w packaging\`.\n`,
        };
      }
    } catch {
      // Replaced or removed between stat and read: the next request looks again.
      return { ok: false, reason: 'not-packaged', message: NOT_PACKAGED_MESSAGE };
    }
    this.cached = { key, state };
    return state;
  }

  /** The packaged release for the install commands, or null when there is none. */
  async release(): Promise<AgentRelease | null> {
    const state = await this.manifest();
    return state.ok ? state.release : null;
  }

  /** A listed file's path; the name must come from the manifest (never from a request). */
  pathOf(name: string): string {
    return path.join(this.dir, path.basename(name));
  }

  async installTemplate(): Promise<string | null> {
    try {
      return await readFile(path.join(this.dir, INSTALL_TEMPLATE_FILE), 'utf8');
    } catch {
      return null;
    }
  }
}
