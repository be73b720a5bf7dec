// Reads /metrics the way Prometheus does: the text exposition, one sample per line.

/** Every sample of the exposition, `name{labels}` → value (labels in the order written). */
export function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^(\S+?(?:\{.*\})?) (\S+)$/.exec(line);
    if (match?.[1] === undefined || match[2] === undefined) {
      throw new Error(`not a sample line: ${line}`);
    }
    samples.set(match[1], match[2] === '+Inf' ? Number.POSITIVE_INFINITY : Number(match[2]));
  }
  return samples;
}

/** GET /metrics (optionally with a bearer token) and its samples. */
export async function scrape(
  baseUrl: string,
  token?: string,
): Promise<{ status: number; text: string; samples: Map<string, number> }> {
  const res = await fetch(`${baseUrl}/metrics`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  const text = await res.text();
  return { status: res.status, text, samples: res.ok ? parseSamples(text) : new Map() };
}

/** One sample's value, or undefined when the series is absent. */
export async function sample(baseUrl: string, series: string): Promise<number | undefined> {
  return (await scrape(baseUrl)).samples.get(series);
}
