/**
 * Where the agent dials: the server's agent endpoint, derived from the `--server` URL an operator
 * types (the dashboard's address). TLS follows the scheme, so `https://` can never silently become
 * a plaintext WebSocket carrying the host credential.
 */
export const AGENT_ENDPOINT_PATH = 'api/agent';

export function agentEndpointUrl(server: string): URL {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new Error(
      `--server ${JSON.stringify(server)} is not a URL (e.g. https://fleet.example.com)`,
    );
  }
  const scheme = { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' }[url.protocol];
  if (scheme === undefined) {
    throw new Error(`--server must be an http(s):// or ws(s):// URL, not ${url.protocol}`);
  }
  if (url.username !== '' || url.password !== '') {
    // Userinfo would end up in logs and process listings; the agent authenticates in `hello`.
    throw new Error('--server must not carry a user name or password; use --token to enroll');
  }
  const endpoint = new URL(url.href);
  endpoint.protocol = scheme;
  // Keep a path prefix (a server behind a reverse proxy at /fleet/), drop query and fragment.
  endpoint.pathname = `${url.pathname.replace(/\/+$/, '')}/${AGENT_ENDPOINT_PATH}`;
  endpoint.search = '';
  endpoint.hash = '';
  return endpoint;
}

/**
 * `--label key=value`, repeatable, into a record. Only the split and duplicates are checked here;
 * the key and value rules are the protocol's (helloMessageSchema), checked by the caller.
 */
export function parseLabels(values: readonly string[]): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const value of values) {
    const eq = value.indexOf('=');
    if (eq <= 0) throw new Error(`--label ${JSON.stringify(value)} must be key=value`);
    const key = value.slice(0, eq);
    if (Object.hasOwn(labels, key)) throw new Error(`--label ${key} given twice`);
    labels[key] = value.slice(eq + 1);
  }
  return labels;
}
