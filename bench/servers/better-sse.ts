import { once } from 'node:events'
import { createServer } from 'node:http'
import { createChannel, createSession } from 'better-sse'
import { type BenchMessage, serveControl } from './control.js'
import { sseDataObjectOf, sseIdOf } from './sse-event.js'

/**
 * better-sse, a popular SSE library for Node, used as its README shows: a session per
 * request registered on one channel, `channel.broadcast(data, event, { eventId })` per
 * message (it serializes and writes per session). Its retry field and keep-alive pings
 * are off, so every server sends the gateway's bytes per event and nothing else.
 */
const channel = createChannel()

const server = createServer((req, res) => {
  if (!(req.url ?? '').startsWith('/sse')) {
    res.writeHead(404).end()
    return
  }
  createSession(req, res, { retry: null, keepAlive: null })
    .then((session) => { channel.register(session) })
    .catch(() => { res.destroy() })
})
server.keepAliveTimeout = 0
server.headersTimeout = 0
server.requestTimeout = 0
server.listen(0, '127.0.0.1')
await once(server, 'listening')

function broadcast (messages: BenchMessage[]): void {
  for (const m of messages) {
    channel.broadcast(sseDataObjectOf(m), 'bench', { eventId: sseIdOf(m) })
  }
}

const address = server.address()
serveControl({
  broadcast,
  connections: () => channel.sessionCount
}, typeof address === 'object' && address !== null ? address.port : 0)
