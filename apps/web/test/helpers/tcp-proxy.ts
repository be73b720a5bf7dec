// A TCP proxy to put between the server and PostgreSQL, to take the database away and give it
// back. cut() destroys every open connection and refuses new ones, in one of two ways a client
// sees in real outages:
// - 'refuse': nothing listens (ECONNREFUSED), as with a database host that is up but PostgreSQL
//   down or restarting;
// - 'reset': connections are accepted and closed at once, as through a proxy or load balancer
//   that has no database behind it.
// restore() lets connections through again, on the same port, so the client's URL stays valid.
import net from 'node:net';

export type CutMode = 'refuse' | 'reset';

export interface TcpProxy {
  /** The local port to connect to instead of the target's. */
  port: number;
  cut(mode?: CutMode): Promise<void>;
  restore(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  let resetting = false;
  const server = net.createServer((client) => {
    if (resetting) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.host);
    open.add(client);
    open.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const stopListening = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) {
        resolve();
        return;
      }
      server.close(() => resolve());
    });
  const destroyOpen = () => {
    for (const socket of [...open]) socket.destroy();
    open.clear();
  };

  await listen(0);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
  const port = address.port;
  return {
    port,
    async cut(mode: CutMode = 'refuse') {
      if (mode === 'reset') {
        resetting = true;
        destroyOpen();
        return;
      }
      // close() stops accepting at once and calls back when the open connections are gone.
      const closing = stopListening();
      destroyOpen();
      await closing;
    },
    async restore() {
      resetting = false;
      if (!server.listening) await listen(port);
    },
    async close() {
      resetting = true;
      const closing = stopListening();
      destroyOpen();
      await closing;
    },
  };
}
