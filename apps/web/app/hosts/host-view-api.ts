/** The host page's data types, from the API's hostView.get (src/api/routers/host-view.ts). */
import type { RouterOutputs } from '../lib/api';

export type HostView = RouterOutputs['hostView']['get'];
export type HostViewGroup = HostView['groups'][number];
export type HostViewDevice = HostViewGroup['devices'][number];
