/**
 * The agent's downloads, unauthenticated (a host being installed has no login, and nothing here is
 * secret):
 *
 * - `GET|HEAD /downloads/<name>`: a file manifest.json lists, streamed, with its length, type,
 *   `X-Checksum-Sha256` and a strong ETag (its digest); any other name is 404, and the name is
 *   compared as sent, never decoded or joined into a path, so `..%2f` and friends are just unknown.
 * - `GET|HEAD /downloads/manifest.json`, `/downloads/SHA256SUMS` (made from the manifest).
 * - `GET|HEAD /install.sh`: install.sh.in rendered for this server's URL and the executable.
 *
 * Without a manifest: 503 with a plain-text note saying how to package the agent.
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { ServerError } from '../errors';
import type { Logger } from '../logger';
import { type AgentDownloads, MANIFEST_FILE } from './agent-downloads';
import { renderInstallScript } from './install-script';
import { agentRelease, contentTypeOf, findFile, sha256sums } from './manifest';

export const DOWNLOADS_PREFIX = '/downloads/';
export const INSTALL_SCRIPT_PATH = '/install.sh';

/** Files are named by version but a rebuild may replace one in place: short, then revalidated. */
const FILE_CACHE = 'public, max-age=300, must-revalidate';

export function isDownloadsPath(pathname: string): boolean {
  return pathname === INSTALL_SCRIPT_PATH || pathname.startsWith(DOWNLOADS_PREFIX);
}

function sendText(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(req.method === 'HEAD' ? undefined : text);
}

function sendBody(
  req: IncomingMessage,
  res: ServerResponse,
  body: string,
  headers: Record<string, string>,
): void {
  res.writeHead(200, { 'content-length': Buffer.byteLength(body), ...headers });
  res.end(req.method === 'HEAD' ? undefined : body);
}

function matchesEtag(req: IncomingMessage, etag: string): boolean {
  const header = req.headers['if-none-match'];
  if (header === undefined) return false;
  return header.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || t === etag || t === `W/${etag}`;
  });
}

export function createDownloadsHandler(
  downloads: AgentDownloads,
  logger: Logger,
  /** This server's URL for agents (public-url.ts), for install.sh; it throws a ServerError. */
  serverUrl: (req: IncomingMessage) => string,
): (req: IncomingMessage, res: ServerResponse, pathname: string) => Promise<void> {
  return async (req, res, pathname) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendText(req, res, 405, 'only GET and HEAD\n', { allow: 'GET, HEAD' });
      return;
    }
    const state = await downloads.manifest();
    if (!state.ok) {
      sendText(req, res, 503, state.message);
      return;
    }
    const { manifest, release } = state;

    if (pathname === INSTALL_SCRIPT_PATH) {
      const template = await downloads.installTemplate();
      if (template === null || release.executable === null) {
        sendText(
          req,
          res,
          503,
          'This server has no install script for linux/x64 (install.sh.in or the executable is missing from the packaging).\nRebuild it with `npm run build -w packaging`.\n',
        );
        return;
      }
      let server: string;
      try {
        server = serverUrl(req);
      } catch (error) {
        if (error instanceof ServerError) {
          sendText(req, res, 400, `${error.message}\n`);
          return;
        }
        throw error;
      }
      // install.sh picks by `uname -m`. Only a file the manifest says is arm64 qualifies (one
      // without an arch matches any, and would hand an arm64 host the x86-64 build).
      const arm64 = agentRelease(manifest, 'arm64').executable;
      const rendered = renderInstallScript(template, server, {
        version: release.version,
        executable: release.executable,
        executableArm64: arm64?.arch !== undefined && arm64 !== release.executable ? arm64 : null,
      });
      if (!rendered.ok) {
        logger.error({ error: rendered.error }, 'install.sh could not be rendered');
        sendText(req, res, 503, `${rendered.error}\n`);
        return;
      }
      sendBody(req, res, rendered.script, {
        'content-type': 'text/x-shellscript; charset=utf-8',
        // Made for the Host the caller used: never shared between callers.
        'cache-control': 'no-store',
      });
      return;
    }

    const name = pathname.slice(DOWNLOADS_PREFIX.length);
    if (name === MANIFEST_FILE) {
      sendBody(req, res, `${JSON.stringify(manifest, null, 2)}\n`, {
        'content-type': 'application/json; charset=utf-8',
        'cache-control': 'no-cache',
      });
      return;
    }
    if (name === 'SHA256SUMS') {
      sendBody(req, res, sha256sums(manifest), {
        'content-type': 'text/plain; charset=utf-8',
        'cache-control': 'no-cache',
      });
      return;
    }
    const file = findFile(manifest, name);
    if (file === null) {
      sendText(req, res, 404, `no download named ${JSON.stringify(name)}\n`);
      return;
    }
    const filePath = downloads.pathOf(file.name);
    let size: number;
    try {
      const info = await stat(filePath);
      if (!info.isFile()) throw new Error('not a file');
      size = info.size;
    } catch {
      size = -1;
    }
    if (size !== file.size) {
      // A half-finished or stale build: never serve bytes the manifest's digest does not describe.
      logger.error(
        { file: filePath, listed: file.size, found: size },
        'a download does not match manifest.json',
      );
      sendText(
        req,
        res,
        503,
        `${file.name} is missing or does not match manifest.json on this server.\nRebuild it with \`npm run build -w packaging\`.\n`,
      );
      return;
    }
    const etag = `"sha256-${file.sha256}"`;
    const headers = {
      etag,
      'cache-control': FILE_CACHE,
      'x-checksum-sha256': file.sha256,
    };
    if (matchesEtag(req, etag)) {
      res.writeHead(304, headers);
      res.end();
      return;
    }
    res.writeHead(200, {
      ...headers,
      'content-type': contentTypeOf(file),
      'content-length': String(file.size),
      'content-disposition': `attachment; filename="${file.name}"`,
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    await pipeline(createReadStream(filePath), res);
  };
}
