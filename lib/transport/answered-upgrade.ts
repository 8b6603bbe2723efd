import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * Closes the socket of an upgrade request that was answered with a plain HTTP reply before
 * reaching a route (a malformed URL: app.ts's router errors, plugins/malformed-query.ts).
 * Node hands an upgrade's socket over to the 'upgrade' listener and no longer manages it:
 * @fastify/websocket closes it after replies that went through its own hooks, but a reply
 * made before them left the socket open for good (CLOSE-WAIT once the client went), and
 * anyone could fill the process's file descriptors with such requests, no token needed.
 * Once the reply is written out, the socket ends and is destroyed. Plain requests are left
 * to the HTTP server's keep-alive as before.
 */
export function closeAfterReply (req: IncomingMessage, res: ServerResponse): void {
  // Node's parser sets `upgrade` on a request it handed to the 'upgrade' listener.
  if ((req as IncomingMessage & { upgrade?: boolean }).upgrade !== true) return
  const socket = req.socket
  const close = (): void => { socket.end(() => socket.destroy()) }
  if (res.writableFinished) close()
  else res.once('finish', close)
}
