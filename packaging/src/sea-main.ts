/**
 * Entry point of the single executable. Node 20 runs a single-executable application's main
 * script as CommonJS, and esbuild cannot emit top-level await in CommonJS, so this calls the same
 * process wiring as apps/agent/src/main.ts without awaiting at the top level.
 */
import { runProcess } from '../../apps/agent/src/process-main';

void runProcess();
