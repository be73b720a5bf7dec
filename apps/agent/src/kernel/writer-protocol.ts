/**
 * The lines the agent and its sysfs writer child exchange (one JSON object a line). The child is
 * the agent's own executable re-run with WRITER_SUBCOMMAND; it trusts only its parent, which made
 * every path check before sending a request.
 */
import { z } from 'zod';

/** Hidden: not in the usage, only the agent runs it. */
export const WRITER_SUBCOMMAND = '__sysfs-writer';

export const writeRequestSchema = z.object({
  id: z.number().int().nonnegative(),
  /** `read`: a lock-taking attribute of a held device, read where a block cannot hurt. */
  op: z.enum(['write', 'read']).optional(),
  /** Where to open on this machine (already located under the agent's root). */
  file: z.string().min(1),
  flags: z.number().int().nonnegative(),
  value: z.string(),
});
export type WriteRequest = z.infer<typeof writeRequestSchema>;

export const writerMessageSchema = z.discriminatedUnion('kind', [
  /** Sent once at start, so the parent's deadline never counts the child's start-up. */
  z.object({ kind: z.literal('ready') }),
  z.object({ kind: z.literal('done'), id: z.number().int(), bytesWritten: z.number().int() }),
  z.object({ kind: z.literal('text'), id: z.number().int(), text: z.string() }),
  z.object({
    kind: z.literal('error'),
    id: z.number().int(),
    code: z.string().nullable(),
    message: z.string(),
  }),
]);
export type WriterMessage = z.infer<typeof writerMessageSchema>;
