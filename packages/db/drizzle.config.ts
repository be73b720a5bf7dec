// drizzle-kit only generates SQL here (`npm run db:generate`); it never connects, so no
// credentials. Migrations are applied by createDb().migrate() on both drivers.
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'postgresql',
  schema: './src/schema.ts',
  out: './drizzle',
});
