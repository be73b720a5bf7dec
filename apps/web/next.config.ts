import type { NextConfig } from 'next';

const config: NextConfig = {
  // The workspace packages export TypeScript sources; Next compiles the ones the UI imports.
  // Server code (db, PGlite, ws, the gateway) is never imported by app/: tRPC is served by our own
  // HTTP server (src/server.ts), so Next's bundle holds only UI.
  transpilePackages: ['@vfio-fleet/core'],
  // src/next-handler.ts's nextDistDir(): one variable for where the build goes and is served from.
  distDir: process.env.VFIO_FLEET_NEXT_DIST_DIR || '.next',
  poweredByHeader: false,
  reactStrictMode: true,
  // `npm run typecheck` (tsc over app/, src/ and test/) is the type check; running it again
  // inside every build would double CI time and fail the UI build on an unrelated server file.
  typescript: { ignoreBuildErrors: true },
};

export default config;
