/**
 * An enrolled agent that is not the real one: a raw WebSocket client speaking protocol v1 with
 * whatever text the protocol's schemas allow, as a compromised host would, or with facts the
 * real agent cannot report yet (a device a VM holds). It enrolls with a
 * token, sends one snapshot, keeps the connection alive with pings, and answers each job with the
 * frames `onJob` returns (for hostile step output).
 */
import { randomUUID } from 'node:crypto';
import { type JobMessage, parseServerMessage, type ServerMessage } from '@vfio-fleet/core';
import { WebSocket } from 'ws';

export interface HostileAgent {
  /** Every frame the server sent. */
  received: ServerMessage[];
  close(): void;
}

export async function startHostileAgent(options: {
  url: string;
  token: string;
  hello: {
    hostname: string;
    kernelRelease: string | null;
    labels: Record<string, string>;
    /** Whether it says it runs jobs; left out, it says nothing, as agents before the field. */
    allowRebind?: boolean;
  };
  /** Sent as is: any object the snapshot schema takes. */
  snapshot: unknown;
  onJob: (job: JobMessage) => unknown[];
}): Promise<HostileAgent> {
  const ws = new WebSocket(`${options.url.replace(/^http/, 'ws')}/api/agent`);
  const received: ServerMessage[] = [];
  const send = (frame: unknown) => ws.send(JSON.stringify(frame));
  const acked = new Promise<void>((resolve, reject) => {
    ws.on('error', reject);
    ws.on('close', (code) => reject(new Error(`the server closed the connection (${code})`)));
    ws.on('message', (data: Buffer) => {
      const parsed = parseServerMessage(data);
      if (!parsed.ok) return;
      const frame = parsed.message;
      received.push(frame);
      if (frame.type === 'welcome') {
        send({ type: 'snapshot', epoch: 'hostile', seq: 1, snapshot: options.snapshot });
      } else if (frame.type === 'ack') {
        resolve();
      } else if (frame.type === 'error' && frame.fatal) {
        reject(new Error(`the server refused the hostile agent: ${frame.message}`));
      } else if (frame.type === 'job') {
        for (const reply of options.onJob(frame)) send(reply);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  send({
    type: 'hello',
    protocolVersion: 1,
    agentVersion: 'hostile',
    host: {
      hostname: options.hello.hostname,
      machineId: null,
      kernelRelease: options.hello.kernelRelease,
    },
    auth: { kind: 'enroll', token: options.token },
    labels: options.hello.labels,
    resume: null,
    ...(options.hello.allowRebind === undefined ? {} : { allowRebind: options.hello.allowRebind }),
  });
  const heartbeat = setInterval(() => {
    send({ type: 'ping', nonce: randomUUID(), sentAt: new Date().toISOString() });
  }, 1_000);
  const close = () => {
    clearInterval(heartbeat);
    ws.terminate();
  };
  try {
    await acked;
  } catch (error) {
    close();
    throw error;
  }
  return { received, close };
}
