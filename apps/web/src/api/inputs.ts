/** zod pieces shared by the routers' inputs. */
import { z } from 'zod';

export const MAX_PAGE = 200;

export const uuidInput = z.uuid();
export const limitInput = z.number().int().min(1).max(MAX_PAGE).default(50);
export const cursorInput = z.string().min(1).max(2000).nullish();
export const hex4Input = z
  .string()
  .regex(/^[0-9a-fA-F]{4}$/, 'expected 4 hex digits')
  .transform((s) => s.toLowerCase());

/** Host labels to match, all of them: `{ rack: "12", gpu: "a100" }`. */
export const labelsInput = z
  .record(z.string().min(1).max(63), z.string().max(255))
  .refine((labels) => Object.keys(labels).length <= 20, 'at most 20 labels')
  .optional();

export const targetInput = z.enum(['vfio', 'host']);
export const pciAddressInput = z.string().min(1).max(32);
