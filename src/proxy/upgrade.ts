import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { IncomingMessage } from 'node:http';
import type { Route } from './route-table.ts';

// An HTTP upgrade (WebSocket) through the proxy: the request goes to the machine on a connection
// of its own, and from then on bytes flow both ways untouched, with no timeout, for as long as
// either side keeps the connection open.

/**
 * Sends the upgrade request (`headers` as a flat name/value list) and splices the two sockets.
 * `closed` runs once, when both are gone. A machine that cannot be reached before it answered
 * gets `failed` called instead of a splice.
 */
export function forwardUpgrade(
  req: IncomingMessage,
  client: Duplex,
  head: Buffer,
  route: Route,
  headers: string[],
  handlers: { failed: (err: Error) => void; closed: () => void },
): void {
  const upstream: Socket = connect({ host: route.ip, port: route.port });
  upstream.setNoDelay(true);
  let spliced = false;
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    client.destroy();
    upstream.destroy();
    handlers.closed();
  };
  upstream.once('connect', () => {
    let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    upstream.write(text + '\r\n');
    if (head.length) upstream.write(head);
    spliced = true;
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstream.once('error', (err) => {
    if (!spliced) {
      closed = true;
      handlers.failed(err);
      handlers.closed();
      return;
    }
    close();
  });
  upstream.once('close', close);
  client.once('error', close);
  client.once('close', close);
}
