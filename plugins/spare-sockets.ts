import type { Socket } from 'node:net'
import fp from 'fastify-plugin'

/**
 * On close, ends the sockets that never carried a request. Browsers and HTTP clients
 * open spare connections ahead of need; Node's server.close() does not count them as
 * idle and waits for them, so a shutdown would hang until the client drops them, or
 * until the grace timeout kills the process with exit code 1.
 *
 * This works around a Node bug: nodejs/node#63452 (https://github.com/nodejs/node/issues/63452),
 * "http: Server.closeIdleConnections() does not iterate pre-request sockets", fixed by
 * nodejs/node#63470. server.close() closes idle connections itself since Node 19, but a
 * socket that never sent a byte is not in the list it walks. On 2026-11-30 Node 20.20.2
 * and 24.22.3 still hang on the reproduction; once the Node the gateway runs on
 * (24 LTS) carries the fix, this plugin can go: test/routes/shutdown.test.ts opens
 * such a spare socket before closing and must pass without it.
 *
 * Registered last, so its preClose hook runs right before the server stops accepting.
 */
export default fp(async (app) => {
  const unused = new Set<Socket>()
  // One shared listener, removed once the socket carries a request: a closure kept on
  // every long-lived WebSocket would cost each connection a few hundred bytes.
  function forget (this: Socket): void { unused.delete(this) }
  const used = (socket: Socket): void => { if (unused.delete(socket)) socket.removeListener('close', forget) }
  app.server.on('connection', (socket: Socket) => {
    unused.add(socket)
    socket.once('close', forget)
  })
  app.server.on('request', (request) => { used(request.socket) })
  app.server.on('upgrade', (request) => { used(request.socket) })
  app.addHook('preClose', async () => {
    for (const socket of unused) socket.destroy()
    unused.clear()
  })
}, { name: 'spare-sockets' })
