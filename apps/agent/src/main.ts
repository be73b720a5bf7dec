/** Process entry point (bundled by build.mjs); the wiring is in process-main.ts. */
import { runProcess } from './process-main';

await runProcess();
